"""Hand-written statements for the reads and inserts that every ticket change makes.

Django builds a query's SQL anew each time it runs: about a millisecond of Python per
statement here, against a few tenths to send it and read the rows (docs/benchmarks.md,
"Hand-written reads on the change path"). A change runs a dozen statements, so the reads
on that path whose shape never varies beyond a list of ids are written out here, in SQL
both databases take. Their rows still come back as model instances, converted field by
field as the ORM would (e.g. SQLite's UUID text).

Inserts of many rows (`insert`) are the other case: `bulk_create` on PostgreSQL sends
each column as an array that psycopg builds value by value, which for the few rows of a
change (its events, its notifications) cost twice a plain multi-row VALUES.

Everything else keeps the ORM. A statement belongs here only when every change runs it."""

from collections.abc import Collection, Sequence
from functools import cache
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

M = TypeVar("M", bound=Model)
# The most parameters one statement may bind (PostgreSQL's protocol counts them in 16 bits).
_MAX_PARAMETERS = 65_535


def select(model: type[M], where: str, params: Sequence[Any], *, order_by: str = "", lock: bool = False) -> list[M]:
    """`SELECT <every column> FROM <the model's table> WHERE <where>`, as instances.
    `where` and `order_by` are SQL on the table's columns; `lock`: the row locked until
    commit, where the database has row locks (SQLite has a single writer anyway).

    The lock is PostgreSQL's FOR NO KEY UPDATE, the one its own UPDATE of a row takes: no
    writer changes a primary key, and FOR UPDATE would also stop the foreign-key checks
    of rows pointing at this one (FOR KEY SHARE). Those checks may run at another
    transaction's COMMIT, after its log lock (a child ticket's row updated twice in one
    transaction has its parent key checked again): a writer holding the parent FOR
    UPDATE and waiting for that log lock deadlocked with it."""
    sql = f"SELECT {_columns(model)} FROM {table(model)} WHERE {where}"  # noqa: S608 (names from the model, values as parameters)
    if order_by:
        sql += f" ORDER BY {order_by}"
    if lock and connection.features.has_select_for_update:
        sql += " FOR NO KEY UPDATE" if connection.features.has_select_for_no_key_update else " FOR UPDATE"
    names, converters = _loading(model)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    instances = []
    for row in rows:
        values = list(row)
        for index, convert, expression in converters:
            values[index] = convert(values[index], expression, connection)
        instances.append(model.from_db(connection.alias, names, values))
    return instances


def insert(model: type[Model], instances: Sequence[Model], *, ignore_conflicts: bool = False) -> None:
    """Insert new instances whose primary key is set, as `bulk_create` would (each
    field's `pre_save`, e.g. `auto_now_add`, then its database value), in statements of
    as many rows as the database takes parameters for. `ignore_conflicts`: a row that
    would break a unique constraint is left out, no error."""
    if not instances:
        return
    fields = model._meta.concrete_fields
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    suffix = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
    # SQLite's backend says how many rows its parameter limit takes; PostgreSQL's says
    # "all of them", as bulk_create sends columns as arrays there, but a statement's
    # bound parameters are at most 65,535 (a unit resolving thousands of tickets).
    batch = connection.ops.bulk_batch_size(fields, instances) or len(instances)
    batch = max(min(batch, _MAX_PARAMETERS // len(fields)), 1)
    with connection.cursor() as cursor:
        for start in range(0, len(instances), batch):
            chunk = instances[start : start + batch]
            params = []
            for instance in chunk:
                if instance.pk is None:
                    raise ValueError(f"{model.__name__} without a primary key: use the ORM")
                params.extend(field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields)
            cursor.execute(
                f"INSERT INTO {table(model)} ({_columns(model)}) VALUES {', '.join([row] * len(chunk))}{suffix}",  # noqa: S608 (names from the model, values as parameters)
                params,
            )
    for instance in instances:
        instance._state.adding = False
        instance._state.db = connection.alias


def where_in(model: type[Model], field: str, values: Collection[Any]) -> tuple[str, list[Any]]:
    """`column IN (%s, ...)` and the values as the database takes them (a UUID is text on
    SQLite). No values: a condition no row meets (`IN ()` is no SQL)."""
    if not values:
        return "1 = 0", []
    model_field = model._meta.get_field(field)
    placeholders = ", ".join(["%s"] * len(values))
    return f"{model_field.column} IN ({placeholders})", [
        model_field.get_db_prep_value(value, connection) for value in values
    ]


def value_for(model: type[Model], field: str, value: Any) -> Any:
    """A parameter for `field`'s column, as the database takes it."""
    return model._meta.get_field(field).get_db_prep_value(value, connection)


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


# A process talks to one kind of database, so what follows is worked out once per model.


@cache
def _columns(model: type[Model]) -> str:
    return ", ".join(connection.ops.quote_name(field.column) for field in model._meta.concrete_fields)


@cache
def _loading(model: type[Model]) -> tuple[list[str], list[tuple[int, Any, Any]]]:
    """The attribute names of the model's columns, and the converters their values need
    as the ORM's compiler finds them (the backend's, then the field's)."""
    names, converters = [], []
    for index, field in enumerate(model._meta.concrete_fields):
        names.append(field.attname)
        expression = field.get_col(model._meta.db_table)
        for convert in connection.ops.get_db_converters(expression) + expression.get_db_converters(connection):
            converters.append((index, convert, expression))
    return names, converters
