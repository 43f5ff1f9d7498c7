"""A process running a small Django project on the ``actor_db.django`` backend.

``python -m tests.django_worker KV_SPEC VFS MODE``; ``KV_SPEC`` ``stdlib:PATH`` runs the same
on Django's own SQLite backend with a file (the reference). MODE ``app``: migrate, then ORM work
(JSONField, transactions, window functions, select_for_update refused), printing one JSON
line of results; MODE ``testrunner``: Django's own test runner on ``shop.tests`` (its
test database an actor of the same store), exit status as the runner's.
"""

from __future__ import annotations

import datetime
import json
import sys
from decimal import Decimal


def setup(kv: str, vfs: str) -> None:
    import django
    from django.conf import settings

    sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/django_project")
    if kv.startswith("stdlib:"):
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": kv[len("stdlib:"):]}
    else:
        database = {"ENGINE": "actor_db.django", "NAME": "shop", "OPTIONS": {"kv": kv, "vfs": vfs}}
    settings.configure(
        DATABASES={"default": database},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "shop"],
        USE_TZ=True, DEFAULT_AUTO_FIELD="django.db.models.AutoField", SECRET_KEY="test")
    django.setup()


def app() -> dict[str, object]:
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import F, Sum, Window
    from django.db.models.functions import RowNumber

    from shop.models import Customer, Order

    call_command("migrate", verbosity=0)
    ada, _ = Customer.objects.get_or_create(name="ada", defaults={"profile": {"tier": "gold"}})
    for i in range(20):
        Order.objects.create(customer=ada, total=Decimal(i) + Decimal("0.25"), placed=datetime.date(2026, 1, 1 + i))
    try:
        with transaction.atomic():
            Order.objects.create(customer=ada, total=Decimal("1000"), placed=datetime.date(2026, 2, 1))
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    refused = False
    try:
        list(Customer.objects.select_for_update())  # outside a transaction: refused
    except Exception as exc:
        refused = type(exc).__name__
    ranks = list(Order.objects.annotate(rank=Window(RowNumber(), order_by=F("total").desc()))
                 .values_list("rank", flat=True)[:3])
    return {
        "vendor": connection.vendor,
        "orders": Order.objects.count(),
        "total": str(Order.objects.aggregate(s=Sum("total"))["s"]),
        "gold": Customer.objects.filter(profile__tier="gold").count(),
        "select_for_update_refused": refused,
        "ranks": ranks,
    }


def main() -> int:
    kv, vfs, mode = sys.argv[1:4]
    setup(kv, vfs)
    if mode == "app":
        print(json.dumps(app()), flush=True)
        return 0
    from django.test.utils import get_runner
    from django.conf import settings

    runner = get_runner(settings)(verbosity=1, interactive=False)
    return 1 if runner.run_tests(["shop.tests"]) else 0


if __name__ == "__main__":
    sys.exit(main())
