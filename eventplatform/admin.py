"""Admin bases shared by every app (they sit below the apps, so no app imports another's admin).

`LargeTableAdmin` is what every list of a table that grows with traffic (events, notifications,
attempts, registrations, outbox) derives from: at a million rows the admin's defaults (a full
COUNT(*) twice per page, DISTINCT over a column for a filter's choices, `icontains` on every
search field ORed together) each cost a full table scan. docs/performance.md has the figures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import models
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

# Related rows one search term may match before the search gives up on that field (an external id
# or an e-mail matches a handful; a term matching more is not a search support staff make).
SEARCH_RELATED_LIMIT = 1000


class ReadOnlyAdmin(admin.ModelAdmin):
    """Event logs are append-only: staff can look, never add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class CappedCountPaginator(Paginator):
    """Counts at most `cap` + 1 rows (`SELECT COUNT(*) FROM (... LIMIT cap + 1)`), never the table.

    A list of a million rows then shows "10001 notifications" and 101 pages of 100: nobody pages
    further, and deep pages would cost an OFFSET of that many rows anyway. Filters and searches
    narrow the list below the cap, where the count is exact.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if isinstance(object_list, QuerySet):
            return object_list[: self.cap + 1].count()
        return len(object_list)


class FixedValuesListFilter(admin.FieldListFilter):
    """A filter whose choices are a fixed list known to the code, not `SELECT DISTINCT column`.

    Django's default for a field without choices (AllValuesFieldListFilter) reads every distinct
    value of the column on each page load: a scan of the whole table. Same URL parameter
    (`<field>__exact`), so existing links keep working. Subclass with `fixed_values_filter`.
    """

    values: Callable[[], Iterable[str]] = staticmethod(lambda: ())

    def __init__(
        self,
        field: models.Field,
        request: HttpRequest,
        params: dict[str, Any],
        model: type[models.Model],
        model_admin: admin.ModelAdmin,
        field_path: str,
    ) -> None:
        self.lookup_kwarg = f"{field_path}__exact"
        self.lookup_val = params.get(self.lookup_kwarg)
        super().__init__(field, request, params, model, model_admin, field_path)

    def expected_parameters(self) -> list[str]:
        return [self.lookup_kwarg]

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        selected = self.lookup_val if isinstance(self.lookup_val, list) else [self.lookup_val]
        yield {
            "selected": self.lookup_val is None,
            "display": "All",
            "query_string": changelist.get_query_string(remove=[self.lookup_kwarg]),
        }
        for value in self.values():
            yield {
                "selected": value in selected,
                "display": value,
                "query_string": changelist.get_query_string({self.lookup_kwarg: value}),
            }


def fixed_values_filter(values: Callable[[], Iterable[str]]) -> type[FixedValuesListFilter]:
    """`list_filter = [("type", fixed_values_filter(lambda: EVENT_TYPES))]`."""
    return type("FixedValuesFilter", (FixedValuesListFilter,), {"values": staticmethod(values)})


class LargeTableAdmin(admin.ModelAdmin):
    """Lists that stay fast at a million rows.

    - no full count: `show_full_result_count = False` and a capped count for the paginator;
    - search that an index answers: each `search_fields` entry is `=field` (exact match) or
      `field` (icontains: give it a trigram index on PostgreSQL); a term is tried only on the
      fields it can be (a UUID field only with a UUID, a number field only with digits), and a
      field across a foreign key (`registration__external_id`) is looked up on its own table first,
      so every ORed condition is an index condition on this table (a bitmap OR, never a join that
      is filtered row by row);
    - `list_select_related` and deferred heavy columns stay each admin's own (`get_queryset`).
    """

    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        search_fields = self.get_search_fields(request)
        terms = search_term.split()
        if not search_fields or not terms:
            return queryset, False
        for term in terms:
            conditions = [
                condition
                for spec in search_fields
                if (condition := _search_condition(queryset.model, str(spec), term)) is not None
            ]
            if not conditions:
                return queryset.none(), False
            any_match = Q()
            for condition in conditions:
                any_match |= condition
            queryset = queryset.filter(any_match)
        return queryset, False


def _search_condition(model: type[models.Model], spec: str, term: str) -> Q | None:
    """The condition `term` puts on one search field, or None if the term cannot match it."""
    exact = spec.startswith("=")
    path = spec.removeprefix("=").split("__")
    field = model._meta.get_field(path[0])
    if len(path) > 1:
        if field.many_to_many or not field.is_relation:
            raise ValueError(f"search field {spec!r}: only foreign keys (either way) can be followed")
        related = field.related_model
        condition = _search_condition(related, ("=" if exact else "") + "__".join(path[1:]), term)
        if condition is None:
            return None
        if field.concrete:  # forward: this row points at the related one
            ids = related._default_manager.filter(condition).values_list("pk", flat=True)[:SEARCH_RELATED_LIMIT]
            found = list(ids)
            return Q(**{f"{field.attname}__in": found}) if found else None
        # reverse (`notifications__id` on a registration): the related rows point at this one
        ids = related._default_manager.filter(condition).values_list(field.field.attname, flat=True)
        found = list(ids[:SEARCH_RELATED_LIMIT])
        return Q(pk__in=found) if found else None
    if isinstance(field, models.UUIDField):
        try:
            return Q(**{field.name: uuid.UUID(term)})
        except ValueError:
            return None
    if isinstance(field, (models.IntegerField, models.AutoField)) or (field.is_relation and field.concrete):
        return Q(**{field.attname: int(term)}) if term.isdigit() and len(term) < 19 else None
    return Q(**{field.name if exact else f"{field.name}__icontains": term})
