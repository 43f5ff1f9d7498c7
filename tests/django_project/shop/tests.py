"""Run by Django's own test runner against the actor_db backend (its test database is
an actor of the same store): see tests/test_django.py."""

import datetime
from decimal import Decimal

from django.db import transaction
from django.test import TestCase, TransactionTestCase

from .models import Customer, Order


class OrmTests(TestCase):
    def test_round_trip(self):
        c = Customer.objects.create(name="ada", profile={"tier": "gold", "tags": ["a", "b"]})
        Order.objects.create(customer=c, total=Decimal("9.50"), placed=datetime.date(2026, 1, 2))
        got = Customer.objects.get(profile__tier="gold")
        self.assertEqual(got.orders.get().total, Decimal("9.50"))
        self.assertEqual(got.orders.get().placed, datetime.date(2026, 1, 2))
        self.assertIs(got.orders.get().shipped, False)


class AtomicTests(TransactionTestCase):
    def test_atomic_rolls_back(self):
        try:
            with transaction.atomic():
                Customer.objects.create(name="bob")
                raise RuntimeError
        except RuntimeError:
            pass
        self.assertFalse(Customer.objects.filter(name="bob").exists())
