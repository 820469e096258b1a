"""The PostgreSQL store's SQL: its schema and the one statement of each decision.

Every text here is a template with ``{s}``, the store's schema (a checked identifier, quoted by
`statements`). Each decision is ONE statement on the server's clock (``clock_timestamp()``,
read once per statement), run as its own transaction by the client's autocommit: nothing is
locked across statements, nothing lives in the session (no ``SET``, no temporary tables, no
advisory locks), and every name is schema-qualified (no reliance on ``search_path``), so the
statements work through PgBouncer's transaction pooling.

Tables (see `SCHEMA`):

- ``buckets``: one row per token bucket (and per key of a keyed one), **UNLOGGED**: no WAL, so
  a decision commits without a WAL flush, but a server crash (not a clean restart) empties it,
  and standbys never see it. An empty table means every bucket is full: after a crash each
  limit admits one extra burst, never more. ``tat`` is the GCRA's theoretical arrival time,
  ``at`` the server's clock of the row's last decision, ``admitted`` that decision's outcome
  and ``granted`` how many requests it admitted where one decision took several (what
  ``RETURNING`` reports: it cannot see the row before the update).
- ``semaphores``: one row per semaphore, never deleted: its lock serialises the semaphore's
  acquisitions, ``fence`` is the last fencing token granted (it never goes back, even when
  every lease expired), ``seq`` the last queue ticket.
- ``leases`` and ``waiters``: a row per holder and per queued waiter, with its expiry on the
  server's clock. Logged tables: a lease never vanishes silently (a crash keeps it until it
  expires, like a holder that stopped renewing).
- ``limiters``: each limiter's kind, name and configuration (`register`).
- ``meta``: the schema's version.
"""

from __future__ import annotations

from admission.stores.network import QUEUE_ENTRY_US

__all__ = ["SCHEMA", "VERSION", "statements"]

VERSION = 4
"""The schema's version, in ``meta``; `SCHEMA` brings an older schema up to it. A version
only adds objects: a schema at a later version has every object of an earlier one."""

# Microseconds since the Unix epoch on the server's clock (extract() is exact numeric on
# PostgreSQL 14+, a double before it: exact to the microsecond until 2255).
_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"

# A bucket's key column: '' for a limiter without keys, 0x01 || key for a keyed one, so that
# the empty key b"" and no key are different buckets.
_KEY = "coalesce('\\x01'::bytea || $2::bytea, '\\x'::bytea)"

SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS {{s}};
CREATE TABLE IF NOT EXISTS {{s}}.meta (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS {{s}}.limiters (
    kind text NOT NULL,
    name text NOT NULL,
    config jsonb NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE UNLOGGED TABLE IF NOT EXISTS {{s}}.buckets (
    name text NOT NULL,
    key bytea NOT NULL,
    tat bigint NOT NULL,
    at bigint NOT NULL,
    admitted boolean NOT NULL,
    granted integer NOT NULL DEFAULT 1,
    PRIMARY KEY (name, key)
) WITH (fillfactor = 70);
-- Version 4's column, added to an older table only when missing: the ALTER takes the table's
-- exclusive lock, which every decision would queue behind, so it waits 50 ms at most for it
-- (the store's `migrate` tries again), and with its constant default it rewrites no row.
-- (IF NOT EXISTS again: another process's creation may add it while this one waits.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = '{{s}}.buckets'::regclass
                   AND a.attname = 'granted' AND NOT a.attisdropped) THEN
        PERFORM set_config('lock_timeout', '50ms', true);
        ALTER TABLE {{s}}.buckets ADD COLUMN IF NOT EXISTS granted integer NOT NULL DEFAULT 1;
    END IF;
END
$$;
CREATE TABLE IF NOT EXISTS {{s}}.semaphores (
    name text PRIMARY KEY,
    fence bigint NOT NULL DEFAULT 0,
    seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {{s}}.leases (
    name text NOT NULL,
    holder text NOT NULL,
    expires bigint NOT NULL,
    fence bigint NOT NULL,
    PRIMARY KEY (name, holder)
);
CREATE TABLE IF NOT EXISTS {{s}}.waiters (
    name text NOT NULL,
    holder text NOT NULL,
    seq bigint NOT NULL,
    expires bigint NOT NULL,
    PRIMARY KEY (name, holder)
);
CREATE INDEX IF NOT EXISTS waiters_by_seq ON {{s}}.waiters (name, seq);

-- One semaphore request. The semaphore's row is locked first (FOR UPDATE, created if
-- missing), so the requests of one semaphore run one after another; each later statement of
-- a PL/pgSQL function takes a fresh snapshot under READ COMMITTED, so it sees every lease
-- committed before the lock was granted. The lock ends with the caller's statement.
CREATE OR REPLACE FUNCTION {{s}}.semaphore_acquire(
    p_name text, p_limit bigint, p_holder text, p_lease bigint, p_queue boolean,
    OUT granted boolean, OUT fence bigint, OUT in_use bigint, OUT ahead bigint
) LANGUAGE plpgsql AS $$
DECLARE
    now bigint;
    my_seq bigint;
BEGIN
    PERFORM 1 FROM {{s}}.semaphores s WHERE s.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO {{s}}.semaphores AS s (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
        PERFORM 1 FROM {{s}}.semaphores s WHERE s.name = p_name FOR UPDATE;
    END IF;
    now := {_NOW};
    DELETE FROM {{s}}.leases l WHERE l.name = p_name AND l.expires <= now;
    DELETE FROM {{s}}.waiters w WHERE w.name = p_name AND w.expires <= now;
    UPDATE {{s}}.leases l SET expires = now + p_lease
        WHERE l.name = p_name AND l.holder = p_holder RETURNING l.fence INTO fence;
    SELECT count(*) INTO in_use FROM {{s}}.leases l WHERE l.name = p_name;
    IF fence IS NOT NULL THEN  -- holds a lease already: renewed
        granted := true; ahead := 0;
        RETURN;
    END IF;
    SELECT w.seq INTO my_seq FROM {{s}}.waiters w WHERE w.name = p_name AND w.holder = p_holder;
    SELECT count(*) INTO ahead FROM {{s}}.waiters w
        WHERE w.name = p_name AND (my_seq IS NULL OR w.seq < my_seq);
    IF ahead < p_limit - in_use THEN  -- FIFO: the free leases go to the earliest waiters
        UPDATE {{s}}.semaphores s SET fence = s.fence + 1
            WHERE s.name = p_name RETURNING s.fence INTO fence;
        INSERT INTO {{s}}.leases (name, holder, expires, fence)
            VALUES (p_name, p_holder, now + p_lease, fence);
        IF my_seq IS NOT NULL THEN
            DELETE FROM {{s}}.waiters w WHERE w.name = p_name AND w.holder = p_holder;
        END IF;
        granted := true; in_use := in_use + 1; ahead := 0;
        RETURN;
    END IF;
    granted := false; fence := 0;
    IF my_seq IS NOT NULL AND p_queue THEN
        UPDATE {{s}}.waiters w SET expires = now + least(p_lease, {QUEUE_ENTRY_US})
            WHERE w.name = p_name AND w.holder = p_holder;
    ELSIF p_queue THEN
        UPDATE {{s}}.semaphores s SET seq = s.seq + 1
            WHERE s.name = p_name RETURNING s.seq INTO my_seq;
        INSERT INTO {{s}}.waiters (name, holder, seq, expires)
            VALUES (p_name, p_holder, my_seq, now + least(p_lease, {QUEUE_ENTRY_US}));
    ELSE
        ahead := 0;  -- not asking to queue: told nothing of the queue (a queued entry stays)
    END IF;
END
$$;

-- Several decisions on one bucket (rate_many): the row is locked first (created if missing,
-- at the TAT of a full bucket), then the requests are decided in their order on one reading
-- of the clock, and the TAT the last admitted one left is written once.
CREATE OR REPLACE FUNCTION {{s}}.rate_many(
    p_name text, p_key bytea, p_interval bigint, p_burst bigint,
    p_costs bigint[], p_max_waits bigint[],
    OUT admitted boolean[], OUT waits bigint[], OUT tats bigint[], OUT now bigint
) LANGUAGE plpgsql AS $$
DECLARE
    k bytea := coalesce('\\x01'::bytea || p_key, '\\x'::bytea);
    v_tat bigint;
    v_new bigint;
    v_wait bigint;
    charged boolean := false;
BEGIN
    now := {_NOW};
    INSERT INTO {{s}}.buckets AS b (name, key, tat, at, admitted)
        VALUES (p_name, k, now, now, false)
        ON CONFLICT (name, key) DO UPDATE SET at = EXCLUDED.at
        RETURNING b.tat INTO v_tat;
    now := {_NOW};  -- read again under the row's lock: no earlier than the last decision's
    v_tat := greatest(v_tat, now);
    admitted := ARRAY[]::boolean[]; waits := ARRAY[]::bigint[]; tats := ARRAY[]::bigint[];
    FOR i IN 1 .. coalesce(array_length(p_costs, 1), 0) LOOP
        v_new := v_tat + p_costs[i] * p_interval;
        v_wait := v_new - p_burst * p_interval - now;
        IF v_wait > 0 AND p_max_waits[i] >= 0 AND v_wait > p_max_waits[i] THEN
            admitted := admitted || false; waits := waits || v_wait; tats := tats || v_tat;
        ELSE
            v_tat := v_new; charged := true;
            admitted := admitted || true; waits := waits || greatest(v_wait, 0);
            tats := tats || v_new;
        END IF;
    END LOOP;
    IF charged THEN
        UPDATE {{s}}.buckets b SET tat = v_tat, at = now, admitted = true
            WHERE b.name = p_name AND b.key = k;
    END IF;
END
$$;

-- Decisions on several buckets of one limiter (rate_batch): p_keys are the buckets, each
-- once (NULL: the limiter's own), p_which the index in p_keys of each request's bucket. The
-- rows are locked in the order of p_keys (created if missing), which the client sorts: two
-- batches over overlapping keys then lock them in one order, never waiting for each other
-- in a cycle (no deadlock). Then the requests are decided in their order on one reading of
-- the clock, each bucket's as rate_many decides them, and each charged bucket written once.
-- One transaction: a row locked by another session would hold up every bucket of the
-- batch, so the rows are waited for p_lock_ms at most (lock_timeout, this transaction
-- only): past it, lock_not_available, nothing written, and the client decides the buckets
-- one at a time (only the locked one's requests then wait for it).
CREATE OR REPLACE FUNCTION {{s}}.rate_batch(
    p_name text, p_interval bigint, p_burst bigint, p_keys bytea[], p_which integer[],
    p_costs bigint[], p_max_waits bigint[], p_lock_ms integer,
    OUT admitted boolean[], OUT waits bigint[], OUT tats bigint[], OUT now bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_keys bytea[];
    v_tats bigint[];
    v_charged boolean[];
    v_tat bigint;
    v_new bigint;
    v_wait bigint;
    j integer;
    n integer := coalesce(array_length(p_which, 1), 0);
BEGIN
    PERFORM set_config('lock_timeout', p_lock_ms || 'ms', true);
    now := {_NOW};
    SELECT array_agg(coalesce('\\x01'::bytea || k, '\\x'::bytea) ORDER BY i) INTO v_keys
        FROM unnest(p_keys) WITH ORDINALITY AS u(k, i);
    WITH locked AS (
        INSERT INTO {{s}}.buckets AS b (name, key, tat, at, admitted)
            SELECT p_name, u.k, now, now, false
            FROM unnest(v_keys) WITH ORDINALITY AS u(k, i) ORDER BY u.i
            ON CONFLICT (name, key) DO UPDATE SET at = EXCLUDED.at
            RETURNING b.key, b.tat)
    SELECT array_agg(l.tat ORDER BY u.i) INTO v_tats
        FROM unnest(v_keys) WITH ORDINALITY AS u(k, i) JOIN locked l ON l.key = u.k;
    now := {_NOW};  -- read again under the rows' locks: no earlier than their last decisions
    v_charged := array_fill(false, ARRAY[array_length(v_keys, 1)]);
    admitted := array_fill(false, ARRAY[n]);
    waits := array_fill(0::bigint, ARRAY[n]);
    tats := array_fill(0::bigint, ARRAY[n]);
    FOR i IN 1 .. n LOOP
        j := p_which[i];
        v_tat := greatest(v_tats[j], now);
        v_new := v_tat + p_costs[i] * p_interval;
        v_wait := v_new - p_burst * p_interval - now;
        IF v_wait > 0 AND p_max_waits[i] >= 0 AND v_wait > p_max_waits[i] THEN
            waits[i] := v_wait; tats[i] := v_tat;
        ELSE
            v_tats[j] := v_new; v_charged[j] := true;
            admitted[i] := true; waits[i] := greatest(v_wait, 0); tats[i] := v_new;
        END IF;
    END LOOP;
    UPDATE {{s}}.buckets b SET tat = u.t, at = now, admitted = true
        FROM unnest(v_keys, v_tats, v_charged) AS u(k, t, c)
        WHERE u.c AND b.name = p_name AND b.key = u.k;
END
$$;

-- Never lowers the version: a later release's schema stays marked as such.
INSERT INTO {{s}}.meta AS m (id, version) VALUES (true, {VERSION})
    ON CONFLICT (id) DO UPDATE SET version = greatest(m.version, EXCLUDED.version);
"""
"""Creates the schema, or brings it up to `VERSION`; idempotent (one simple-query string:
PostgreSQL runs it as one transaction)."""

# The object `VERSION` added (``buckets.granted``): its presence tells a schema of this
# version whose version number an earlier release's creation wrote back (releases before
# version 3 set it as is).
_ADDED = """EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = to_regclass('{s}.buckets')
                AND a.attname = 'granted' AND NOT a.attisdropped)"""


# The DO UPDATE of a decision on an existing row, whose lock is held when it runs: the
# server's clock read now (once per row: a volatile sub-select of a correlated one, run
# again for each row), the GCRA's decision of ``cost`` µs against a burst of ``burst`` µs
# within a max wait of ``wait`` µs (negative: any wait), and the row's new TAT, outcome
# and clock.
_DECIDE_LOCKED = (
    """(tat, admitted, at) = (
    SELECT CASE WHEN d.ok THEN t.tat + {cost} ELSE b.tat END, d.ok, n.now
    FROM (SELECT """
    + _NOW
    + """ AS now) n,
         LATERAL (SELECT greatest(b.tat, n.now) AS tat) t,
         LATERAL (SELECT {wait} < 0
                         OR t.tat + {cost} - {burst} - n.now <= {wait}
                  AS ok) d)"""
)

# The same for ``EXCLUDED.granted`` requests of one cost on the row (a hot key's requests
# in one batch), decided in order, each as if alone: the k-th is admitted if the TAT after
# it is within the wait, so the admitted ones are the first k that fit, at most (now +
# burst + wait - TAT) / cost of them; ``granted`` is set to k. (A form of its own: its
# arithmetic costs the server about 1 µs a row more than `_DECIDE_LOCKED`'s.)
_DECIDE_LOCKED_COUNTED = (
    """(tat, admitted, at, granted) = (
    SELECT CASE WHEN d.k > 0 THEN t.tat + d.k * t.cost ELSE b.tat END, d.k > 0, n.now, d.k
    FROM (SELECT """
    + _NOW
    + """ AS now) n,
         LATERAL (SELECT greatest(b.tat, n.now) AS tat,
                         (EXCLUDED.tat - EXCLUDED.at) / EXCLUDED.granted AS cost) t,
         LATERAL (SELECT (CASE WHEN {wait} < 0 THEN EXCLUDED.granted
                          ELSE least(EXCLUDED.granted,
                                     greatest(0, (n.now + {burst} + {wait} - t.tat) / t.cost))
                          END)::integer AS k) d)"""
)


# The statement of a batch whose requests share one max wait ($6), each bucket's at one
# cost: with each bucket once, `rate`'s decision on each row; with ``counted``, a bucket's
# requests (the $8 of it, in their order) decided as `rate` decides them one after the
# other. All in one statement (one transaction, one write per row; the rate_batch function
# writes each row twice and runs five statements: 2.3 x this one's server CPU for 8 keys).
# The rows are locked in the order of $4 (sorted by the client, as for rate_batch), and
# each row lock is waited for $7 at most: lock_timeout is set, for this transaction only,
# by the materialized CTE that every row of the INSERT joins, so before any row lock (the
# table's own lock, taken when the plan starts, is not bounded by it: only DDL holds that
# one). A new row admits all of its bucket's requests (the client sends only buckets whose
# burst and max wait hold them all), so the proposed row is the outcome; the DO UPDATE
# finds each request's cost in µs in EXCLUDED.tat - EXCLUDED.at (over EXCLUDED.granted,
# the count, with ``counted``).
def _rate_each(counted: bool) -> str:
    count, per = (", u.n", "u.n * ") if counted else ("", "")
    decide = (
        _DECIDE_LOCKED_COUNTED
        if counted
        else _DECIDE_LOCKED.replace("{cost}", "EXCLUDED.tat - EXCLUDED.at")
    )
    return f"""
WITH c AS MATERIALIZED (SELECT set_config('lock_timeout', $7, true), {_NOW} AS now)
INSERT INTO {{s}}.buckets AS b (name, key, tat, at, admitted{", granted" if counted else ""})
SELECT $1, coalesce('\\x01'::bytea || u.k, '\\x'::bytea), c.now + {per}u.cost * $2::bigint,
       c.now, true{count}
FROM c, unnest($4::bytea[], $5::bigint[]{", $8::integer[]" if counted else ""})
     WITH ORDINALITY AS u(k, cost{", n" if counted else ""}, i)
ORDER BY u.i
ON CONFLICT (name, key) DO UPDATE SET {
        decide.replace("{burst}", "$3::bigint * $2::bigint").replace("{wait}", "$6::bigint")
    }
RETURNING b.key, {"b.granted" if counted else "b.admitted::integer"}, b.tat, b.at"""


_STATEMENTS = {
    # The schema's version, and whether it has the objects of `VERSION` (see `_ADDED`).
    "version": f"SELECT m.version, {_ADDED} FROM {{s}}.meta m",
    # Always writes the row (a refusal rewrites the same TAT), so RETURNING reports the
    # decision made on the newest version of the row, the one the conflict locked. A new
    # row is decided on the clock read for the proposed row (EXCLUDED.at); an existing one
    # on the clock read again once its lock is held (`_DECIDE_LOCKED`), so that a decision
    # that waited for the row (another decision, a slow transaction) is not charged as of
    # before the wait, which would hand out the time it waited as extra tokens. (A row the
    # sweep deleted while the statement waited for it is inserted as proposed, on the
    # clock read before the wait: the sweep deletes only full buckets, in statements of a
    # few ms, and such a new row's charge starts that much early.)
    "rate": f"""
INSERT INTO {{s}}.buckets AS b (name, key, tat, at, admitted)
SELECT $1, {_KEY}, c.now + $5::bigint * $3::bigint, c.now, true
FROM (SELECT {_NOW} AS now) c
ON CONFLICT (name, key) DO UPDATE SET {
        _DECIDE_LOCKED.format(
            cost="$5::bigint * $3::bigint", burst="$4::bigint * $3::bigint", wait="$6::bigint"
        )
    }
RETURNING b.admitted, b.tat, b.at""",
    "rate_many": ("SELECT admitted, waits, tats, now FROM {s}.rate_many($1, $2, $3, $4, $5, $6)"),
    "rate_each": _rate_each(counted=False),
    "rate_each_counted": _rate_each(counted=True),
    "rate_batch": (
        "SELECT admitted, waits, tats, now FROM {s}.rate_batch($1, $2, $3, $4, $5, $6, $7, $8)"
    ),
    "rate_give_back": f"""
UPDATE {{s}}.buckets b SET tat = b.tat - $4::bigint * $3::bigint
WHERE b.name = $1 AND b.key = {_KEY} AND b.tat = $5::bigint""",
    "register": """
INSERT INTO {s}.limiters AS l (kind, name, config) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (kind, name) DO UPDATE SET kind = l.kind
RETURNING l.config::text""",
    "semaphore_acquire": (
        "SELECT granted, fence, in_use, ahead FROM {s}.semaphore_acquire($1, $2, $3, $4, $5)"
    ),
    "semaphore_renew": f"""
WITH c AS MATERIALIZED (SELECT {_NOW} AS now)
UPDATE {{s}}.leases l SET expires = c.now + $3::bigint FROM c
WHERE l.name = $1 AND l.holder = ANY($2::text[]) AND l.expires > c.now
RETURNING l.holder""",
    "semaphore_release": f"""
WITH c AS MATERIALIZED (SELECT {_NOW} AS now),
lease AS (DELETE FROM {{s}}.leases l USING c WHERE l.name = $1 AND l.holder = $2
          RETURNING l.expires > c.now AS valid),
queued AS (DELETE FROM {{s}}.waiters w USING c WHERE w.name = $1 AND w.holder = $2
           RETURNING w.expires > c.now AS valid)
SELECT coalesce(bool_or(valid), false) FROM (TABLE lease UNION ALL TABLE queued) v""",
    "semaphore_state": f"""
WITH c AS MATERIALIZED (SELECT {_NOW} AS now)
SELECT (SELECT count(*) FROM {{s}}.leases l WHERE l.name = $1 AND l.expires > c.now),
       (SELECT count(*) FROM {{s}}.waiters w WHERE w.name = $1 AND w.expires > c.now)
FROM c""",
    # One batch of each table: rows locked by a decision in flight are skipped, never
    # waited for (SKIP LOCKED); a decision that meets a row of the batch waits for this one
    # statement only. A row whose newer version the batch locked is left for the next sweep.
    "sweep": f"""
WITH c AS MATERIALIZED (SELECT {_NOW} AS now),
b AS (DELETE FROM {{s}}.buckets x USING c
      WHERE x.ctid = ANY(ARRAY(SELECT y.ctid FROM {{s}}.buckets y, c
                               WHERE y.tat <= c.now LIMIT $1 FOR UPDATE OF y SKIP LOCKED))
        AND x.tat <= c.now RETURNING 1),
l AS (DELETE FROM {{s}}.leases x USING c
      WHERE x.ctid = ANY(ARRAY(SELECT y.ctid FROM {{s}}.leases y, c
                               WHERE y.expires <= c.now LIMIT $1 FOR UPDATE OF y SKIP LOCKED))
        AND x.expires <= c.now RETURNING 1),
w AS (DELETE FROM {{s}}.waiters x USING c
      WHERE x.ctid = ANY(ARRAY(SELECT y.ctid FROM {{s}}.waiters y, c
                               WHERE y.expires <= c.now LIMIT $1 FOR UPDATE OF y SKIP LOCKED))
        AND x.expires <= c.now RETURNING 1)
SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM l), (SELECT count(*) FROM w)""",
}


def statements(schema: str) -> dict[str, str]:
    """Every statement (and ``"schema"``: `SCHEMA`) for ``schema``, an identifier the caller
    has checked (it is quoted here, so any case survives)."""
    quoted = '"' + schema + '"'
    texts = {name: text.format(s=quoted) for name, text in _STATEMENTS.items()}
    texts["schema"] = SCHEMA.format(s=quoted)
    return texts
