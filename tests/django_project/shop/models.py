"""A small Django app for the ``actor_db.django`` backend's tests."""

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100, unique=True)
    profile = models.JSONField(default=dict)
    joined = models.DateTimeField(auto_now_add=True)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total = models.DecimalField(max_digits=10, decimal_places=2)
    shipped = models.BooleanField(default=False)
    placed = models.DateField()
