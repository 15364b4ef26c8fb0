public import ProdReadyPostgres

/// The tables of SPEC-reliability (names and columns are a contract: suites and operators query them) and the
/// server-side functions that make each registry and allocator operation one round trip and one transaction.
public enum ReliabilitySchema {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "processed_events and aggregate_versions", sql: registryTables),
        Migration(version: 2, name: "registry and allocator functions", sql: registryFunctions),
        Migration(version: 3, name: "outbox_events", sql: outboxTable),
        Migration(version: 4, name: "mark done then claim the next event", sql: markDoneThenClaim),
        Migration(version: 5, name: "per-event functions return through OUT parameters", sql: outParameterReturns),
    ]

    /// Creates `schema` if needed and brings it to the latest version.
    public static func runner(schema: SQLIdentifier) throws -> MigrationRunner {
        try MigrationRunner(schema: schema, migrations: migrations)
    }

    static func registryTables(_ s: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(s).processed_events (
            handler text NOT NULL,
            event_id text NOT NULL,
            aggregate_id text NULL,
            sequence_number bigint NULL,
            status text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            owner text NOT NULL,
            heartbeat_at timestamptz,
            processed_at timestamptz NULL,
            attempt_count int NOT NULL DEFAULT 1,
            last_error text NULL,
            PRIMARY KEY (handler, event_id)
        );
        CREATE INDEX IF NOT EXISTS processed_events_handler_aggregate ON \(s).processed_events (handler, aggregate_id);
        CREATE INDEX IF NOT EXISTS processed_events_status ON \(s).processed_events (status);
        CREATE INDEX IF NOT EXISTS processed_events_processing_leases ON \(s).processed_events (handler, status, heartbeat_at)
            WHERE status = 'processing';
        CREATE TABLE IF NOT EXISTS \(s).aggregate_versions (
            handler text NOT NULL,
            aggregate_id text NOT NULL,
            last_sequence bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (handler, aggregate_id)
        );
        """
    }

    // Every statement on processed_events names the full primary key and nothing else in its WHERE clause;
    // status and owner are checked in PL/pgSQL on a row locked with FOR UPDATE. With a status condition in the
    // WHERE clause and statistics that lag a fast-growing table, the planner picks the partial index on
    // processing rows and scans all of them (seen: 40 updates/s at 400,000 rows). Under READ COMMITTED,
    // FOR UPDATE waits for a concurrent holder and returns the newest version of the row, so a check made after
    // it sees what the previous holder committed: of several reclaimers of one expired lease exactly one wins.
    static func registryFunctions(_ s: String) -> String {
        """
        CREATE OR REPLACE FUNCTION \(s).prodready_claim(
            p_handler text, p_event_id text, p_aggregate_id text, p_sequence bigint, p_owner text, p_lease_ms bigint)
        RETURNS TABLE (claim_outcome text, claim_attempts int)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_row \(s).processed_events%ROWTYPE;
            v_attempts int;
            v_last bigint;
        BEGIN
            INSERT INTO \(s).processed_events AS pe
                (handler, event_id, aggregate_id, sequence_number, status, started_at, owner, heartbeat_at, attempt_count)
            VALUES (p_handler, p_event_id, p_aggregate_id, p_sequence, 'processing', now(), p_owner, now(), 1)
            ON CONFLICT (handler, event_id) DO NOTHING
            RETURNING pe.attempt_count INTO v_attempts;
            IF NOT FOUND THEN
                SELECT * INTO v_row FROM \(s).processed_events pe
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
                -- done, skipped_stale, a status this code does not know, or a row deleted meanwhile
                IF NOT FOUND OR v_row.status NOT IN ('processing', 'failed') THEN
                    RETURN QUERY SELECT 'duplicate_done'::text, NULL::int;
                    RETURN;
                END IF;
                SELECT * INTO v_row FROM \(s).processed_events pe
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id FOR UPDATE;
                IF NOT FOUND OR v_row.status NOT IN ('processing', 'failed') THEN
                    RETURN QUERY SELECT 'duplicate_done'::text, NULL::int;
                    RETURN;
                END IF;
                IF v_row.status = 'processing'
                   AND coalesce(v_row.heartbeat_at, v_row.started_at) >= now() - p_lease_ms * interval '1 millisecond' THEN
                    RETURN QUERY SELECT 'in_progress'::text, NULL::int;
                    RETURN;
                END IF;
                -- an expired lease, or a failed attempt: take it over
                UPDATE \(s).processed_events pe
                SET status = 'processing', owner = p_owner, attempt_count = pe.attempt_count + 1, last_error = NULL,
                    started_at = now(), heartbeat_at = now(), processed_at = NULL
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id
                RETURNING pe.attempt_count INTO v_attempts;
            END IF;
            IF p_aggregate_id IS NOT NULL AND p_sequence IS NOT NULL THEN
                SELECT av.last_sequence INTO v_last FROM \(s).aggregate_versions av
                WHERE av.handler = p_handler AND av.aggregate_id = p_aggregate_id;
                IF FOUND AND p_sequence <= v_last THEN
                    UPDATE \(s).processed_events pe SET status = 'skipped_stale', processed_at = now()
                    WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
                    RETURN QUERY SELECT 'stale'::text, v_attempts;
                    RETURN;
                END IF;
            END IF;
            RETURN QUERY SELECT 'claimed'::text, v_attempts;
        END
        $$;

        -- Claims in event-id order whatever the input order, so two batch claimers that overlap wait for each
        -- other instead of deadlocking. Empty aggregate ids and sequence -1 stand for "not given".
        CREATE OR REPLACE FUNCTION \(s).prodready_claim_batch(
            p_handler text, p_event_ids text[], p_aggregate_ids text[], p_sequences bigint[], p_owner text, p_lease_ms bigint)
        RETURNS TABLE (claim_ordinal bigint, claim_outcome text, claim_attempts int)
        LANGUAGE plpgsql AS $$
        DECLARE
            r record;
        BEGIN
            FOR r IN
                SELECT u.ord, u.eid, nullif(u.agg, '') AS agg, nullif(u.seq, -1) AS seq
                FROM unnest(p_event_ids, p_aggregate_ids, p_sequences) WITH ORDINALITY AS u(eid, agg, seq, ord)
                ORDER BY u.eid, u.ord
            LOOP
                claim_ordinal := r.ord;
                SELECT c.claim_outcome, c.claim_attempts INTO claim_outcome, claim_attempts
                FROM \(s).prodready_claim(p_handler, r.eid, r.agg, r.seq, p_owner, p_lease_ms) c;
                RETURN NEXT;
            END LOOP;
        END
        $$;

        -- Finishes events in event-id order, then advances each aggregate once, in aggregate order (so concurrent
        -- batches cannot deadlock on aggregate_versions), to the highest sequence finished and never backwards.
        -- done_result: done (this call finished it), already_done (done or skipped_stale before), not_owner, missing.
        DROP FUNCTION IF EXISTS \(s).prodready_mark_done_batch(text, text[], text);
        CREATE FUNCTION \(s).prodready_mark_done_batch(p_handler text, p_event_ids text[], p_owner text)
        RETURNS TABLE (done_ordinal bigint, done_result text, current_status text, current_owner text)
        LANGUAGE plpgsql AS $$
        DECLARE
            r record;
            v_row \(s).processed_events%ROWTYPE;
            v_aggregates text[] := '{}';
            v_sequences bigint[] := '{}';
        BEGIN
            FOR r IN
                SELECT u.ord, u.eid FROM unnest(p_event_ids) WITH ORDINALITY AS u(eid, ord) ORDER BY u.eid, u.ord
            LOOP
                done_ordinal := r.ord;
                SELECT * INTO v_row FROM \(s).processed_events pe
                WHERE pe.handler = p_handler AND pe.event_id = r.eid FOR UPDATE;
                IF NOT FOUND THEN
                    done_result := 'missing'; current_status := NULL; current_owner := NULL;
                ELSIF v_row.status IN ('done', 'skipped_stale') THEN
                    done_result := 'already_done'; current_status := v_row.status; current_owner := v_row.owner;
                ELSIF v_row.status = 'processing' AND v_row.owner = p_owner THEN
                    UPDATE \(s).processed_events pe SET status = 'done', processed_at = now(), heartbeat_at = now()
                    WHERE pe.handler = p_handler AND pe.event_id = r.eid;
                    IF v_row.aggregate_id IS NOT NULL AND v_row.sequence_number IS NOT NULL THEN
                        v_aggregates := v_aggregates || v_row.aggregate_id;
                        v_sequences := v_sequences || v_row.sequence_number;
                    END IF;
                    done_result := 'done'; current_status := 'done'; current_owner := p_owner;
                ELSE
                    done_result := 'not_owner'; current_status := v_row.status; current_owner := v_row.owner;
                END IF;
                RETURN NEXT;
            END LOOP;
            IF cardinality(v_aggregates) > 0 THEN
                INSERT INTO \(s).aggregate_versions AS av (handler, aggregate_id, last_sequence, updated_at)
                SELECT p_handler, u.agg, max(u.seq), now()
                FROM unnest(v_aggregates, v_sequences) AS u(agg, seq)
                GROUP BY u.agg
                ORDER BY u.agg
                ON CONFLICT (handler, aggregate_id) DO UPDATE
                SET last_sequence = excluded.last_sequence, updated_at = excluded.updated_at
                WHERE av.last_sequence < excluded.last_sequence;
            END IF;
        END
        $$;

        -- The single-event path: one guarded UPDATE. The guard is a CASE expression because the planner cannot
        -- match a partial index against one (see the note above), so the primary key is the only access path;
        -- READ COMMITTED re-evaluates it on the newest row version if another transaction changed the row.
        CREATE OR REPLACE FUNCTION \(s).prodready_mark_done(p_handler text, p_event_id text, p_owner text)
        RETURNS TABLE (done_result text, current_status text, current_owner text)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_aggregate text;
            v_sequence bigint;
            v_status text;
            v_owner text;
        BEGIN
            UPDATE \(s).processed_events pe SET status = 'done', processed_at = now(), heartbeat_at = now()
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id
              AND CASE WHEN pe.status = 'processing' AND pe.owner = p_owner THEN true ELSE false END
            RETURNING pe.aggregate_id, pe.sequence_number INTO v_aggregate, v_sequence;
            IF FOUND THEN
                IF v_aggregate IS NOT NULL AND v_sequence IS NOT NULL THEN
                    INSERT INTO \(s).aggregate_versions AS av (handler, aggregate_id, last_sequence, updated_at)
                    VALUES (p_handler, v_aggregate, v_sequence, now())
                    ON CONFLICT (handler, aggregate_id) DO UPDATE
                    SET last_sequence = excluded.last_sequence, updated_at = excluded.updated_at
                    WHERE av.last_sequence < excluded.last_sequence;
                END IF;
                RETURN QUERY SELECT 'done'::text, 'done'::text, p_owner;
                RETURN;
            END IF;
            SELECT pe.status, pe.owner INTO v_status, v_owner FROM \(s).processed_events pe
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'missing'::text, NULL::text, NULL::text;
            ELSIF v_status IN ('done', 'skipped_stale') THEN
                RETURN QUERY SELECT 'already_done'::text, v_status, v_owner;
            ELSE
                RETURN QUERY SELECT 'not_owner'::text, v_status, v_owner;
            END IF;
        END
        $$;

        CREATE OR REPLACE FUNCTION \(s).prodready_mark_failed(p_handler text, p_event_id text, p_owner text, p_error text)
        RETURNS TABLE (failed_result text, current_status text, current_owner text)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_row \(s).processed_events%ROWTYPE;
        BEGIN
            SELECT * INTO v_row FROM \(s).processed_events pe
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id FOR UPDATE;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'missing'::text, NULL::text, NULL::text;
            ELSIF v_row.status IN ('done', 'skipped_stale') THEN
                RETURN QUERY SELECT 'already_done'::text, v_row.status, v_row.owner;
            ELSIF v_row.status = 'processing' AND v_row.owner = p_owner THEN
                UPDATE \(s).processed_events pe SET status = 'failed', last_error = left(p_error, 4000), heartbeat_at = now()
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
                RETURN QUERY SELECT 'failed'::text, 'failed'::text, p_owner;
            ELSE
                RETURN QUERY SELECT 'not_owner'::text, v_row.status, v_row.owner;
            END IF;
        END
        $$;

        CREATE OR REPLACE FUNCTION \(s).prodready_heartbeat(p_handler text, p_event_id text, p_owner text)
        RETURNS boolean
        LANGUAGE plpgsql AS $$
        DECLARE
            v_row \(s).processed_events%ROWTYPE;
        BEGIN
            SELECT * INTO v_row FROM \(s).processed_events pe
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id FOR UPDATE;
            IF NOT FOUND OR v_row.status <> 'processing' OR v_row.owner <> p_owner THEN
                RETURN false;
            END IF;
            UPDATE \(s).processed_events pe SET heartbeat_at = now()
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
            RETURN true;
        END
        $$;

        -- The conditional reserve: with a seed, first raise the row to max(current, seed) (creating it), then
        -- increment only if it equals p_expected. reserved is null when nothing was reserved; actual is the
        -- value seen (null: no row).
        CREATE OR REPLACE FUNCTION \(s).prodready_reserve_expected(
            p_handler text, p_aggregate_id text, p_seed bigint, p_expected bigint)
        RETURNS TABLE (reserved bigint, actual bigint)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_reserved bigint;
            v_actual bigint;
        BEGIN
            IF p_seed IS NOT NULL THEN
                INSERT INTO \(s).aggregate_versions AS av (handler, aggregate_id, last_sequence, updated_at)
                VALUES (p_handler, p_aggregate_id, p_seed, now())
                ON CONFLICT (handler, aggregate_id) DO UPDATE
                SET last_sequence = greatest(av.last_sequence, excluded.last_sequence), updated_at = now();
            END IF;
            UPDATE \(s).aggregate_versions av SET last_sequence = av.last_sequence + 1, updated_at = now()
            WHERE av.handler = p_handler AND av.aggregate_id = p_aggregate_id AND av.last_sequence = p_expected
            RETURNING av.last_sequence INTO v_reserved;
            IF FOUND THEN
                RETURN QUERY SELECT v_reserved, v_reserved;
                RETURN;
            END IF;
            SELECT av.last_sequence INTO v_actual FROM \(s).aggregate_versions av
            WHERE av.handler = p_handler AND av.aggregate_id = p_aggregate_id;
            RETURN QUERY SELECT NULL::bigint, v_actual;
        END
        $$;
        """
    }

    static func outboxTable(_ s: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(s).outbox_events (
            id bigserial PRIMARY KEY,
            event_id text NOT NULL UNIQUE,
            event_type text NOT NULL,
            event_data jsonb NOT NULL,
            source text NOT NULL,
            subject text,
            correlation_id text,
            idempotency_key text,
            status text NOT NULL DEFAULT 'pending',
            retry_count int NOT NULL DEFAULT 0,
            max_retries int NOT NULL DEFAULT 3,
            next_retry_at timestamptz,
            error_message text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz,
            claimed_by text,
            claimed_until timestamptz
        );
        CREATE INDEX IF NOT EXISTS outbox_events_pending ON \(s).outbox_events (id) WHERE status = 'pending';
        CREATE INDEX IF NOT EXISTS outbox_events_failed ON \(s).outbox_events (updated_at) WHERE status = 'failed';
        CREATE INDEX IF NOT EXISTS outbox_events_retryable ON \(s).outbox_events (next_retry_at)
            WHERE status = 'failed' AND retry_count <= max_retries;
        CREATE INDEX IF NOT EXISTS outbox_events_claims ON \(s).outbox_events (claimed_until) WHERE status = 'processing';
        """
    }

    /// The per-event functions of migrations 2 and 4 with the same transitions, returning through their OUT
    /// parameters (`RETURN NEXT`) instead of `RETURN QUERY SELECT …`: a constant row no longer starts an executor
    /// of its own, one of the three statements of a fresh claim or a markDone on the server.
    static func outParameterReturns(_ s: String) -> String {
        """
        CREATE OR REPLACE FUNCTION \(s).prodready_claim(
            p_handler text, p_event_id text, p_aggregate_id text, p_sequence bigint, p_owner text, p_lease_ms bigint)
        RETURNS TABLE (claim_outcome text, claim_attempts int)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_row \(s).processed_events%ROWTYPE;
            v_attempts int;
            v_last bigint;
        BEGIN
            INSERT INTO \(s).processed_events AS pe
                (handler, event_id, aggregate_id, sequence_number, status, started_at, owner, heartbeat_at, attempt_count)
            VALUES (p_handler, p_event_id, p_aggregate_id, p_sequence, 'processing', now(), p_owner, now(), 1)
            ON CONFLICT (handler, event_id) DO NOTHING
            RETURNING pe.attempt_count INTO v_attempts;
            IF NOT FOUND THEN
                SELECT * INTO v_row FROM \(s).processed_events pe
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
                -- done, skipped_stale, a status this code does not know, or a row deleted meanwhile
                IF NOT FOUND OR v_row.status NOT IN ('processing', 'failed') THEN
                    claim_outcome := 'duplicate_done'::text; claim_attempts := NULL::int;
                    RETURN NEXT;
                    RETURN;
                END IF;
                SELECT * INTO v_row FROM \(s).processed_events pe
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id FOR UPDATE;
                IF NOT FOUND OR v_row.status NOT IN ('processing', 'failed') THEN
                    claim_outcome := 'duplicate_done'::text; claim_attempts := NULL::int;
                    RETURN NEXT;
                    RETURN;
                END IF;
                IF v_row.status = 'processing'
                   AND coalesce(v_row.heartbeat_at, v_row.started_at) >= now() - p_lease_ms * interval '1 millisecond' THEN
                    claim_outcome := 'in_progress'::text; claim_attempts := NULL::int;
                    RETURN NEXT;
                    RETURN;
                END IF;
                -- an expired lease, or a failed attempt: take it over
                UPDATE \(s).processed_events pe
                SET status = 'processing', owner = p_owner, attempt_count = pe.attempt_count + 1, last_error = NULL,
                    started_at = now(), heartbeat_at = now(), processed_at = NULL
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id
                RETURNING pe.attempt_count INTO v_attempts;
            END IF;
            IF p_aggregate_id IS NOT NULL AND p_sequence IS NOT NULL THEN
                SELECT av.last_sequence INTO v_last FROM \(s).aggregate_versions av
                WHERE av.handler = p_handler AND av.aggregate_id = p_aggregate_id;
                IF FOUND AND p_sequence <= v_last THEN
                    UPDATE \(s).processed_events pe SET status = 'skipped_stale', processed_at = now()
                    WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
                    claim_outcome := 'stale'::text; claim_attempts := v_attempts;
                    RETURN NEXT;
                    RETURN;
                END IF;
            END IF;
            claim_outcome := 'claimed'::text; claim_attempts := v_attempts;
            RETURN NEXT;
        END
        $$;

        CREATE OR REPLACE FUNCTION \(s).prodready_mark_done(p_handler text, p_event_id text, p_owner text)
        RETURNS TABLE (done_result text, current_status text, current_owner text)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_aggregate text;
            v_sequence bigint;
            v_status text;
            v_owner text;
        BEGIN
            UPDATE \(s).processed_events pe SET status = 'done', processed_at = now(), heartbeat_at = now()
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id
              AND CASE WHEN pe.status = 'processing' AND pe.owner = p_owner THEN true ELSE false END
            RETURNING pe.aggregate_id, pe.sequence_number INTO v_aggregate, v_sequence;
            IF FOUND THEN
                IF v_aggregate IS NOT NULL AND v_sequence IS NOT NULL THEN
                    INSERT INTO \(s).aggregate_versions AS av (handler, aggregate_id, last_sequence, updated_at)
                    VALUES (p_handler, v_aggregate, v_sequence, now())
                    ON CONFLICT (handler, aggregate_id) DO UPDATE
                    SET last_sequence = excluded.last_sequence, updated_at = excluded.updated_at
                    WHERE av.last_sequence < excluded.last_sequence;
                END IF;
                done_result := 'done'::text; current_status := 'done'::text; current_owner := p_owner;
                RETURN NEXT;
                RETURN;
            END IF;
            SELECT pe.status, pe.owner INTO v_status, v_owner FROM \(s).processed_events pe
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
            IF NOT FOUND THEN
                done_result := 'missing'::text; current_status := NULL::text; current_owner := NULL::text;
                RETURN NEXT;
            ELSIF v_status IN ('done', 'skipped_stale') THEN
                done_result := 'already_done'::text; current_status := v_status; current_owner := v_owner;
                RETURN NEXT;
            ELSE
                done_result := 'not_owner'::text; current_status := v_status; current_owner := v_owner;
                RETURN NEXT;
            END IF;
        END
        $$;

        CREATE OR REPLACE FUNCTION \(s).prodready_mark_done_then_claim(
            p_handler text, p_done_event_id text, p_owner text,
            p_event_id text, p_aggregate_id text, p_sequence bigint, p_lease_ms bigint)
        RETURNS TABLE (done_result text, current_status text, current_owner text, claim_outcome text, claim_attempts int)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_done record;
            v_claim record;
        BEGIN
            SELECT * INTO v_done FROM \(s).prodready_mark_done(p_handler, p_done_event_id, p_owner);
            done_result := v_done.done_result; current_status := v_done.current_status; current_owner := v_done.current_owner;
            IF v_done.done_result NOT IN ('done', 'already_done') THEN
                RETURN NEXT;
                RETURN;
            END IF;
            SELECT * INTO v_claim FROM \(s).prodready_claim(p_handler, p_event_id, p_aggregate_id, p_sequence, p_owner, p_lease_ms);
            claim_outcome := v_claim.claim_outcome; claim_attempts := v_claim.claim_attempts;
            RETURN NEXT;
        END
        $$;
        """
    }

    /// A consumer's loop in one round trip and one transaction per event: finish the event it handled, then
    /// claim the next delivery, with exactly the transitions of `prodready_mark_done` and `prodready_claim`.
    /// When the finish is refused (not the owner, no such row) nothing is claimed, so a caller that gets the
    /// refusal never holds a claim it does not know about.
    static func markDoneThenClaim(_ s: String) -> String {
        """
        CREATE OR REPLACE FUNCTION \(s).prodready_mark_done_then_claim(
            p_handler text, p_done_event_id text, p_owner text,
            p_event_id text, p_aggregate_id text, p_sequence bigint, p_lease_ms bigint)
        RETURNS TABLE (done_result text, current_status text, current_owner text, claim_outcome text, claim_attempts int)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_done record;
            v_claim record;
        BEGIN
            SELECT * INTO v_done FROM \(s).prodready_mark_done(p_handler, p_done_event_id, p_owner);
            IF v_done.done_result NOT IN ('done', 'already_done') THEN
                RETURN QUERY SELECT v_done.done_result, v_done.current_status, v_done.current_owner, NULL::text, NULL::int;
                RETURN;
            END IF;
            SELECT * INTO v_claim FROM \(s).prodready_claim(p_handler, p_event_id, p_aggregate_id, p_sequence, p_owner, p_lease_ms);
            RETURN QUERY SELECT v_done.done_result, v_done.current_status, v_done.current_owner, v_claim.claim_outcome, v_claim.claim_attempts;
        END
        $$;
        """
    }
}
