"""DuckDB stage SQL as Spark SQL: sqlglot's transpiler plus the fixes it lacks, failing loudly.

The stages keep one definition, their DuckDB SQL; the Spark engine runs it through `to_spark`.
sqlglot (`unsupported_level=RAISE`) translates most of it, but several DuckDB constructs come out
wrong or not at all and sqlglot raises for none of them (found by the differential tests):

- list slices `a[i:j]` (1-based, inclusive) are emitted as `a[i:j]`, which Spark cannot parse:
  rewritten to `slice(a, i, j - i + 1)`;
- `regexp_replace(s, p, '\\1…', 'g')`: Java regexes name groups `$1`, and `\\1` yields a plain
  `1`: back-references are rewritten; DuckDB without `'g'` replaces the first match only, which
  Spark cannot do, so that raises;
- `regexp_full_match` has no Spark function: `RLIKE '^(?:p)$'`;
- aggregates Spark has with other results or not at all (`_aggregate`): `list(x ORDER BY k…)`
  loses its ORDER BY and `list(x)` gives `[]` over no rows (DuckDB: NULL) and drops NULLs, so
  lists are collected as structs and sorted by a comparator with DuckDB's order (NULLS LAST);
  `first(x ORDER BY k…)` does not parse on Spark; `min(x, n)` does not exist; `corr` and
  `regr_slope` are NULL on Spark where DuckDB gives NaN (a variance of 0);
- `row_number() OVER ()` needs an ORDER BY on Spark: `ORDER BY NULL` (any numbering, as DuckDB's);
- `t.* EXCLUDE (c…)` becomes `t.* EXCEPT`: expanded from the registered table's columns
  (`columns_of`); over a subquery or a CTE it is left as `* EXCEPT (c…)`, which recent Spark
  runs (4.3, the version tested);
- `ASOF JOIN` is emitted as is: rewritten to a sort-based as-of join (`_asof_join`);
- a scalar subquery in the SELECT list of a grouped query (DuckDB accepts it when it is correlated
  on group keys only, so it is one value per group) is wrapped in `first()`, as Spark requires;
- `quantile_cont(x, q)` comes out as a `percentile_cont(x, q)` Spark rejects: `percentile(x, q)`
  (exact, interpolated, as DuckDB's);
- `$name` parameters are inlined as literals (Spark SQL has none).
Anything else sqlglot cannot express raises (`ErrorLevel.RAISE`), as do UPDATE and DELETE (a
Spark temp view cannot be updated): a stage that needs them has a portable rewrite instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlglot
from sqlglot import ErrorLevel, exp


class NotPortable(ValueError):
    """A DuckDB statement the Spark engine cannot run with the same meaning."""


def parse(sql: str) -> exp.Expression:
    statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    if len(statements) != 1:
        raise NotPortable(f"expected one statement, got {len(statements)}")
    return statements[0]


def to_spark(node: exp.Expression, params: dict | None = None,
             columns_of: Callable[[str], list[str]] | None = None) -> str:
    """Spark SQL for one parsed DuckDB statement (or expression)."""
    node = node.copy()
    node = node.transform(lambda n: _inline_param(n, params or {}))
    node = node.transform(_fix_node)
    for select in list(node.find_all(exp.Select)):
        _expand_excludes(select, columns_of)
        _rewrite_asof(select)
        _wrap_grouped_subqueries(select)
    return node.sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)


def _inline_param(node: exp.Expression, params: dict) -> exp.Expression:
    if isinstance(node, (exp.Placeholder, exp.Parameter)):
        name = node.name
        if name not in params:
            raise NotPortable(f"no value for parameter ${name}")
        value = params[name]
        if isinstance(value, bool) or value is None or not isinstance(value, (int, float, str)):
            raise NotPortable(f"parameter ${name}: only numbers and text are inlined")
        return exp.Literal.string(value) if isinstance(value, str) else exp.Literal.number(value)
    return node


def _fix_node(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Bracket) and node.expressions and isinstance(node.expressions[0], exp.Slice):
        return _slice(node)
    if isinstance(node, exp.RegexpReplace):
        return _regexp_replace(node)
    if isinstance(node, exp.Anonymous) and node.name.lower() == "regexp_full_match":
        return _full_match(node.expressions)
    if type(node).__name__ == "RegexpFullMatch":  # newer sqlglot parses it into a node of its own
        return _full_match([node.this, node.expression])
    if isinstance(node, exp.PercentileCont) and node.expression is not None:
        return exp.Anonymous(this="percentile", expressions=[node.this, node.expression])
    if isinstance(node, exp.Window) and isinstance(node.this, exp.RowNumber) and not any(
            node.args.get(a) for a in ("order", "partition_by", "spec", "alias")):  # OVER (): Spark wants an ORDER BY
        node.set("order", exp.Order(expressions=[exp.Ordered(this=exp.Null())]))
        return node
    if isinstance(node, exp.Filter) and _rewritten_aggregate(node.this):
        return _aggregate(node.this, node.expression.this, node.parent)
    if _rewritten_aggregate(node) and not isinstance(node.parent, exp.Filter):
        return _aggregate(node, None, node.parent)
    return node


def _rewritten_aggregate(node: exp.Expression) -> bool:
    """The aggregates whose Spark translation by sqlglot is wrong or missing (see `_aggregate`)."""
    return (isinstance(node, exp.ArrayAgg) and not isinstance(node.this, exp.Distinct)
            or isinstance(node, exp.First) and isinstance(node.this, exp.Order)
            or isinstance(node, (exp.Min, exp.Max)) and node.args.get("count") is not None
            or isinstance(node, (exp.Corr, exp.RegrSlope)))


def _spark(node: exp.Expression | None) -> str:
    return node.transform(_fix_node).sql(dialect="spark", unsupported_level=ErrorLevel.RAISE)


def _aggregate(agg: exp.Expression, cond: exp.Expression | None, parent: exp.Expression | None) -> exp.Expression:
    """DuckDB aggregates in Spark SQL with DuckDB's results, `cond` being a FILTER (WHERE cond):
    - `list(x [ORDER BY k…])`: NULL over no rows (Spark's collect_list gives []), NULL elements
      kept (collect_list drops them), the order (ASC/DESC, DuckDB's NULLS LAST or as written)
      kept by sorting structs with a comparator; `list(DISTINCT x ORDER BY x)` is
      `array_sort(collect_set(x))`;
    - `first(x ORDER BY k…)`: the first of the same sorted structs;
    - `min(x, n)` (DuckDB's n smallest, ascending): the sorted list sliced;
    - `corr`, `regr_slope`: DuckDB gives NaN where a variance is 0 over one row or more, Spark
      NULL: NaN when Spark's is NULL over a non-empty input."""
    if isinstance(parent, exp.Window):
        raise NotPortable(f"{agg.sql(dialect='duckdb')} OVER (…) is not translated")
    where = None if cond is None else _spark(cond)
    if isinstance(agg, (exp.Corr, exp.RegrSlope)):
        a, b = _spark(agg.this), _spark(agg.expression)
        name = "corr" if isinstance(agg, exp.Corr) else "regr_slope"
        call = f"{name}({a}, {b})" + ("" if where is None else f" FILTER (WHERE {where})")
        both = f"{a} IS NOT NULL AND {b} IS NOT NULL" + ("" if where is None else f" AND ({where})")
        return _parse(f"coalesce({call}, CASE WHEN count(CASE WHEN {both} THEN 1 END) > 0 "
                      "THEN CAST('NaN' AS DOUBLE) END)")
    if isinstance(agg, (exp.Min, exp.Max)):
        if isinstance(agg, exp.Max):
            raise NotPortable("max(x, n) is not translated")
        value = _only_if(_spark(agg.this), where)
        return _parse(f"CASE WHEN size(collect_list({value})) = 0 THEN NULL "
                      f"ELSE slice(array_sort(collect_list({value})), 1, {_spark(agg.args['count'])}) END")
    order = agg.this if isinstance(agg.this, exp.Order) else None
    value = order.this if order is not None else agg.this
    keys = list(order.expressions) if order is not None else []
    if isinstance(value, exp.Distinct):
        inner = value.expressions[0]
        if len(keys) != 1 or keys[0].this != inner or keys[0].args.get("desc"):
            raise NotPortable("list(DISTINCT x ORDER BY y) with y other than x ascending is not translated")
        collected = f"collect_set({_only_if(_spark(inner), where)})"
        return _parse(f"CASE WHEN size({collected}) = 0 THEN NULL ELSE array_sort({collected}) END")
    fields = "".join(f"'k{i}', {_spark(key.this)}, " for i, key in enumerate(keys))
    element = f"named_struct({fields}'v', {_spark(value)})"
    collected = f"collect_list({_only_if(element, where)})"
    ordered = f"array_sort({collected}, (_a, _b) -> {_comparator(keys)})" if keys else collected
    if isinstance(agg, exp.First):
        return _parse(f"element_at({ordered}, 1).v")
    return _parse(f"CASE WHEN size({collected}) = 0 THEN NULL ELSE transform({ordered}, _s -> _s.v) END")


def _only_if(value: str, where: str | None) -> str:
    return value if where is None else f"CASE WHEN {where} THEN {value} END"


def _comparator(keys: list[exp.Expression]) -> str:
    """A Spark array_sort comparator of structs (_a, _b) by fields k0, k1, … as DuckDB orders
    them: ASC or DESC, NULLS LAST unless written otherwise."""
    cmp = "0"
    for i in reversed(range(len(keys))):
        key = keys[i]
        up = -1 if key.args.get("desc") else 1
        nulls = -1 if key.args.get("nulls_first") else 1
        a, b = f"_a.k{i}", f"_b.k{i}"
        cmp = (f"CASE WHEN {a} IS NULL AND {b} IS NULL THEN {cmp} WHEN {a} IS NULL THEN {nulls} "
               f"WHEN {b} IS NULL THEN {-nulls} WHEN {a} < {b} THEN {-up} WHEN {a} > {b} THEN {up} ELSE {cmp} END")
    return cmp


def _parse(spark_sql: str) -> exp.Expression:
    return sqlglot.parse_one(spark_sql, read="spark")


def _slice(node: exp.Bracket) -> exp.Expression:
    piece = node.expressions[0]
    array = node.this.transform(_fix_node)  # a replaced node's children are not visited
    start = piece.this if piece.this is not None else exp.Literal.number(1)
    if piece.expression is None:
        length: exp.Expression = exp.ArraySize(this=array.copy())
    else:
        length = exp.paren(exp.Sub(this=piece.expression.copy(), expression=start.copy())) + 1
    return exp.Anonymous(this="slice", expressions=[array, start, length])


def _regexp_replace(node: exp.RegexpReplace) -> exp.Expression:
    modifiers = node.args.get("modifiers")
    if modifiers is None or modifiers.name != "g":
        raise NotPortable("regexp_replace without 'g' replaces the first match only; Spark replaces all")
    replacement = node.args.get("replacement")
    if not (isinstance(replacement, exp.Literal) and replacement.is_string):
        raise NotPortable("regexp_replace: only a literal replacement can be translated")
    text = replacement.name.replace("$", r"\$")
    text = re.sub(r"\\(\d)", r"$\1", text)
    return exp.RegexpReplace(this=node.this, expression=node.expression, replacement=exp.Literal.string(text))


def _full_match(args: list[exp.Expression]) -> exp.Expression:
    value, pattern = args[0], args[1]
    if not (isinstance(pattern, exp.Literal) and pattern.is_string):
        raise NotPortable("regexp_full_match: only a literal pattern can be translated")
    return exp.RegexpLike(this=value, expression=exp.Literal.string(f"^(?:{pattern.name})$"))


def _wrap_grouped_subqueries(select: exp.Select) -> None:
    if not select.args.get("group"):
        return
    for projection in select.expressions:
        target = projection.this if isinstance(projection, exp.Alias) else projection
        if isinstance(target, exp.Subquery):
            target.replace(exp.Anonymous(this="first", expressions=[target.copy()]))


def _alias_tables(select: exp.Select) -> dict[str, exp.Expression]:
    sources = {}
    for source in [select.args.get("from_") or select.args.get("from")] + list(select.args.get("joins") or []):
        if source is None:
            continue
        table = source.this
        sources[table.alias_or_name] = table
    return sources


def _expand_excludes(select: exp.Select, columns_of: Callable[[str], list[str]] | None) -> None:
    for i, projection in enumerate(list(select.expressions)):
        star = projection.this if isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star) \
            else projection if isinstance(projection, exp.Star) else None
        if star is None or not star.args.get("except_") and not star.args.get("except"):
            continue
        excluded = {c.name for c in (star.args.get("except_") or star.args.get("except"))}
        qualifier = projection.table if isinstance(projection, exp.Column) else ""
        table = _alias_tables(select).get(qualifier) if qualifier else None
        try:
            held = columns_of(table.name) if isinstance(table, exp.Table) and columns_of else None
        except NotPortable:  # a CTE's name, not a table
            held = None
        if held is None:  # a subquery or a CTE: Spark's own `* EXCEPT`
            continue
        names = [c for c in held if c not in excluded]
        expanded = [exp.column(c, table=qualifier or None) for c in names]
        select.expressions[i:i + 1] = expanded
        select.set("expressions", select.expressions)


def _rewrite_asof(select: exp.Select) -> None:
    joins = select.args.get("joins") or []
    for join in joins:
        if (join.args.get("method") or "").upper() == "ASOF":
            _asof_join(select, join)


def _asof_join(select: exp.Select, join: exp.Join) -> None:
    """`L l ASOF JOIN R r ON l.k = r.k … AND l.t >= r.t` as a sort instead of a range join: the rows
    of both sides in one window per key ordered by time (R before L on equal times), each L row
    taking the last R row seen (`last(…, true)`); the R row with the greatest (time, row) wins a
    tie, where DuckDB takes any. Column references to l and r become fields of the two structs."""
    left_source = select.args.get("from_") or select.args.get("from")
    left, right = left_source.this, join.this
    la, ra = left.alias_or_name, right.alias_or_name
    keys: list[tuple[exp.Expression, exp.Expression]] = []
    times = None
    for cond in _conjuncts(join.args["on"]):
        sides = {c.table for c in cond.find_all(exp.Column)}
        if isinstance(cond, exp.EQ):
            a, b = cond.this, cond.expression
            keys.append((a, b) if a.table == la else (b, a))
        elif isinstance(cond, exp.GTE) and sides == {la, ra}:
            a, b = cond.this, cond.expression
            if a.table != la:
                raise NotPortable("ASOF: write the condition as l.t >= r.t")
            times = (a, b)
        else:
            raise NotPortable(f"ASOF condition not translated: {cond.sql()}")
    if times is None:
        raise NotPortable("ASOF JOIN needs a >= condition")

    def side(table: exp.Expression, alias: str, is_left: bool) -> str:
        key_sql = [(k[0] if is_left else k[1]).sql(dialect="duckdb") for k in keys]
        time_sql = (times[0] if is_left else times[1]).sql(dialect="duckdb")
        struct_l = f"struct({alias}.*)" if is_left else "NULL"
        struct_r = "NULL" if is_left else f"struct({alias}.*)"
        not_null = " AND ".join(f"{k} IS NOT NULL" for k in key_sql + [time_sql])
        keyed = ", ".join(f"{k} AS _k{i}" for i, k in enumerate(key_sql))
        return (f"SELECT {struct_l} AS _l, {struct_r} AS _r, {keyed}, {time_sql} AS _t, {int(is_left)} AS _side "
                f"FROM {table.sql(dialect='duckdb')} WHERE {not_null}")

    partition = ", ".join(f"_k{i}" for i in range(len(keys)))
    sub = sqlglot.parse_one(
        f"SELECT _l, _m AS _r FROM (SELECT _l, _side, last(_r, true) OVER (PARTITION BY {partition} "
        f"ORDER BY _t, _side, _r ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _m "
        f"FROM ({side(left, la, True)} UNION ALL {side(right, ra, False)})) WHERE _side = 1 AND _m IS NOT NULL",
        read="spark")
    joins = select.args["joins"]
    joins.remove(join)
    select.set("joins", joins or None)
    left_source.set("this", exp.Subquery(this=sub, alias=exp.TableAlias(this=exp.to_identifier("_asof"))))
    fields = {la: "_l", ra: "_r"}

    def qualify(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and node.table in fields:
            return exp.Dot(this=exp.column(fields[node.table], table="_asof"), expression=node.this)
        return node

    for arg in ("expressions", "where", "group", "having", "order", "qualify"):
        value = select.args.get(arg)
        if isinstance(value, list):
            select.set(arg, [v.transform(qualify) for v in value])
        elif value is not None:
            select.set(arg, value.transform(qualify))


def _conjuncts(cond: exp.Expression) -> list[exp.Expression]:
    if isinstance(cond, exp.And):
        return _conjuncts(cond.this) + _conjuncts(cond.expression)
    if isinstance(cond, exp.Paren):
        return _conjuncts(cond.this)
    return [cond]
