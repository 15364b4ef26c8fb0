public import ProdReadyPostgres

/// The tables of SPEC-reliability (names and columns are a contract: suites and operators query them) and the
/// server-side functions that make each registry and allocator operation one round trip and one transaction.
public enum ReliabilitySchema {
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "processed_events and aggregate_versions", sql: registryTables),
        Migration(version: 2, name: "registry and allocator functions", sql: registryFunctions),
        Migration(version: 3, name: "outbox_events", sql: outboxTable),
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

    // Under READ COMMITTED every statement of a volatile PL/pgSQL function takes a fresh snapshot, and an
    // UPDATE whose row changed under it re-checks its WHERE clause on the newest version. The guarded
    // UPDATEs below rely on both: of several concurrent reclaimers exactly one still matches.
    static func registryFunctions(_ s: String) -> String {
        """
        CREATE OR REPLACE FUNCTION \(s).prodready_claim(
            p_handler text, p_event_id text, p_aggregate_id text, p_sequence bigint, p_owner text, p_lease_ms bigint)
        RETURNS TABLE (claim_outcome text, claim_attempts int)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_status text;
            v_attempts int;
            v_last bigint;
        BEGIN
            INSERT INTO \(s).processed_events AS pe
                (handler, event_id, aggregate_id, sequence_number, status, started_at, owner, heartbeat_at, attempt_count)
            VALUES (p_handler, p_event_id, p_aggregate_id, p_sequence, 'processing', now(), p_owner, now(), 1)
            ON CONFLICT (handler, event_id) DO NOTHING
            RETURNING pe.attempt_count INTO v_attempts;
            IF NOT FOUND THEN
                SELECT pe.status INTO v_status FROM \(s).processed_events pe
                WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
                IF v_status = 'processing' THEN
                    UPDATE \(s).processed_events pe
                    SET owner = p_owner, attempt_count = pe.attempt_count + 1, last_error = NULL,
                        started_at = now(), heartbeat_at = now()
                    WHERE pe.handler = p_handler AND pe.event_id = p_event_id AND pe.status = 'processing'
                      AND coalesce(pe.heartbeat_at, pe.started_at) < now() - p_lease_ms * interval '1 millisecond'
                    RETURNING pe.attempt_count INTO v_attempts;
                    IF NOT FOUND THEN
                        RETURN QUERY SELECT 'in_progress'::text, NULL::int;
                        RETURN;
                    END IF;
                ELSIF v_status = 'failed' THEN
                    UPDATE \(s).processed_events pe
                    SET status = 'processing', owner = p_owner, attempt_count = pe.attempt_count + 1, last_error = NULL,
                        started_at = now(), heartbeat_at = now(), processed_at = NULL
                    WHERE pe.handler = p_handler AND pe.event_id = p_event_id AND pe.status = 'failed'
                    RETURNING pe.attempt_count INTO v_attempts;
                    IF NOT FOUND THEN
                        RETURN QUERY SELECT 'in_progress'::text, NULL::int;
                        RETURN;
                    END IF;
                ELSE
                    -- done, skipped_stale, a status this code does not know, or a row deleted meanwhile
                    RETURN QUERY SELECT 'duplicate_done'::text, NULL::int;
                    RETURN;
                END IF;
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

        -- result: done (this call finished it), already_done (done or skipped_stale before), not_owner, missing.
        CREATE OR REPLACE FUNCTION \(s).prodready_mark_done_batch(p_handler text, p_event_ids text[], p_owner text)
        RETURNS TABLE (done_event_id text, done_result text, current_status text, current_owner text)
        LANGUAGE sql AS $$
            WITH finished AS (
                UPDATE \(s).processed_events pe
                SET status = 'done', processed_at = now(), heartbeat_at = now()
                FROM (SELECT DISTINCT eid FROM unnest(p_event_ids) AS u(eid)) u
                WHERE pe.handler = p_handler AND pe.event_id = u.eid AND pe.status = 'processing' AND pe.owner = p_owner
                RETURNING pe.event_id, pe.aggregate_id, pe.sequence_number
            ), advanced AS (
                INSERT INTO \(s).aggregate_versions AS av (handler, aggregate_id, last_sequence, updated_at)
                SELECT p_handler, f.aggregate_id, max(f.sequence_number), now()
                FROM finished f
                WHERE f.aggregate_id IS NOT NULL AND f.sequence_number IS NOT NULL
                GROUP BY f.aggregate_id
                ORDER BY f.aggregate_id
                ON CONFLICT (handler, aggregate_id) DO UPDATE
                SET last_sequence = excluded.last_sequence, updated_at = excluded.updated_at
                WHERE av.last_sequence < excluded.last_sequence
                RETURNING 1
            )
            SELECT u.eid,
                   CASE WHEN f.event_id IS NOT NULL THEN 'done'
                        WHEN pe.status IN ('done', 'skipped_stale') THEN 'already_done'
                        WHEN pe.status IS NULL THEN 'missing'
                        ELSE 'not_owner' END,
                   CASE WHEN f.event_id IS NOT NULL THEN 'done' ELSE pe.status END,
                   pe.owner
            FROM unnest(p_event_ids) WITH ORDINALITY AS u(eid, ord)
            LEFT JOIN finished f ON f.event_id = u.eid
            LEFT JOIN \(s).processed_events pe ON pe.handler = p_handler AND pe.event_id = u.eid
            ORDER BY u.ord
        $$;

        CREATE OR REPLACE FUNCTION \(s).prodready_mark_failed(p_handler text, p_event_id text, p_owner text, p_error text)
        RETURNS TABLE (failed_result text, current_status text, current_owner text)
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE \(s).processed_events pe
            SET status = 'failed', last_error = left(p_error, 4000), heartbeat_at = now()
            WHERE pe.handler = p_handler AND pe.event_id = p_event_id AND pe.status = 'processing' AND pe.owner = p_owner;
            IF FOUND THEN
                RETURN QUERY SELECT 'failed'::text, 'failed'::text, p_owner;
                RETURN;
            END IF;
            RETURN QUERY
                SELECT CASE WHEN pe.status IN ('done', 'skipped_stale') THEN 'already_done' ELSE 'not_owner' END,
                       pe.status, pe.owner
                FROM \(s).processed_events pe WHERE pe.handler = p_handler AND pe.event_id = p_event_id;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'missing'::text, NULL::text, NULL::text;
            END IF;
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
}
