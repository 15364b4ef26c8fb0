public import PostgresNIO
public import ProdReadyCore
public import ProdReadyPostgres
public import ServiceLifecycle
import Foundation
import Logging
import Metrics

/// A claimed outbox row, as a sink receives it.
public struct OutboxRecord: Sendable {
    public var id: Int64
    public var eventID: String
    public var eventType: String
    /// The envelope JSON (as Postgres normalised it).
    public var eventData: [UInt8]
    public var source: String
    public var subject: String?
    public var aggregateID: String?
    public var correlationID: String?
    public var idempotencyKey: String?
    /// Failed attempts so far.
    public var retryCount: Int
    public var maxRetries: Int
}

/// Where a relay publishes: a broker (Kafka, JetStream, Redis) or, for tests and dry runs, a table.
public protocol OutboxSink: Sendable {
    /// Publishes `records`; the result for each, in the same order. A failed result is retried later with
    /// backoff; a thrown error fails the whole batch.
    func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>]
}

/// What one relay pass did.
public struct RelayPass: Sendable, Equatable {
    public var claimed = 0
    public var published = 0
    /// Failed and scheduled for a retry.
    public var failed = 0
    /// Failed for the last time: parked as dead letters.
    public var parked = 0

    public init(claimed: Int = 0, published: Int = 0, failed: Int = 0, parked: Int = 0) {
        self.claimed = claimed
        self.published = published
        self.failed = failed
        self.parked = parked
    }

    /// Adds another pass's counts to these.
    public mutating func add(_ other: RelayPass) {
        claimed += other.claimed
        published += other.published
        failed += other.failed
        parked += other.parked
    }
}

/// Moves committed outbox rows to a sink (SPEC-reliability §3). Any number of relays may run against one
/// table: batches are claimed with `FOR UPDATE SKIP LOCKED` and marked `processing` with a claim deadline,
/// so a relay that dies after claiming delays its rows by at most `claimTimeout`. A failed publish is
/// retried with exponential backoff and full jitter until `max_retries`, then parked as `failed`.
///
/// Runs as a `Service` (polls until cancelled or gracefully shut down), or pass by pass with `relayOnce`.
public struct OutboxRelay: Service {
    public struct Options: Sendable {
        public var relayID: String
        public var batchSize: Int
        /// How long a claim is exclusive; a relay that dies holding rows delays them by this much.
        public var claimTimeout: Duration
        /// How long to wait after a pass that found nothing.
        public var idleDelay: Duration
        /// Delay before retry n (0-based) is drawn uniformly from [0, min(cap, base · 2ⁿ)].
        public var retryBackoff: Backoff
        /// How long to wait after a pass that failed (database unreachable), growing with each failure.
        public var errorBackoff: Backoff
        /// Called after every pass that claimed something (progress output, metrics).
        public var onPass: (@Sendable (RelayPass) -> Void)?

        public init(
            relayID: String = ProcessedEventRegistry.defaultOwner(service: "outbox-relay"),
            batchSize: Int = 500,
            claimTimeout: Duration = .seconds(30),
            idleDelay: Duration = .milliseconds(50),
            retryBackoff: Backoff = Backoff(base: .seconds(1), cap: .seconds(300)),
            errorBackoff: Backoff = Backoff(base: .milliseconds(100), cap: .seconds(5)),
            onPass: (@Sendable (RelayPass) -> Void)? = nil
        ) {
            self.onPass = onPass
            self.relayID = relayID
            self.batchSize = batchSize
            self.claimTimeout = claimTimeout
            self.idleDelay = idleDelay
            self.retryBackoff = retryBackoff
            self.errorBackoff = errorBackoff
        }
    }

    public let client: PostgresClient
    public let schema: SQLIdentifier
    public let sink: any OutboxSink
    public let options: Options
    let logger: Logger
    let publishedCounter: Counter
    let failedCounter: Counter
    let parkedCounter: Counter

    public init(client: PostgresClient, schema: SQLIdentifier, sink: any OutboxSink, options: Options = Options(), logger: Logger = reliabilityLogger) throws {
        guard (1...10_000).contains(options.batchSize) else {
            throw ProdReadyError(.invalidArgument, "relay batch size must be between 1 and 10000, got \(options.batchSize)")
        }
        guard options.claimTimeout >= .milliseconds(10) else {
            throw ProdReadyError(.invalidArgument, "claim timeout must be at least 10 ms, got \(options.claimTimeout)")
        }
        try ProcessedEventRegistry.validateText(options.relayID, name: "relay id")
        self.client = client
        self.schema = schema
        self.sink = sink
        self.options = options
        self.logger = logger
        let dimensions = [("schema", schema.name)]
        publishedCounter = Counter(label: "prodready_outbox_published_total", dimensions: dimensions)
        failedCounter = Counter(label: "prodready_outbox_publish_failures_total", dimensions: dimensions)
        parkedCounter = Counter(label: "prodready_outbox_parked_total", dimensions: dimensions)
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            var consecutiveErrors = 0
            var random = SystemRandomNumberGenerator()
            while !Task.isCancelled {
                do {
                    let pass = try await relayOnce()
                    consecutiveErrors = 0
                    if pass.claimed == 0 {
                        try await Task.sleep(for: options.idleDelay)
                    } else {
                        options.onPass?(pass)
                    }
                } catch is CancellationError {
                    return
                } catch {
                    logger.warning("outbox relay pass failed", metadata: ["relay": "\(options.relayID)", "error": "\(error)"])
                    let delay = options.errorBackoff.delay(attempt: consecutiveErrors, using: &random)
                    consecutiveErrors += 1
                    do { try await Task.sleep(for: delay) } catch { return }
                }
            }
        }
    }

    /// Relays pass after pass until one finds nothing to claim; returns the passes' sum.
    @discardableResult
    public func drain() async throws -> RelayPass {
        var total = RelayPass()
        while true {
            let pass = try await relayOnce()
            if pass.claimed == 0 { return total }
            total.add(pass)
        }
    }

    /// Claims one batch, publishes it and records the outcome of every row.
    @discardableResult
    public func relayOnce() async throws -> RelayPass {
        let records = try await claimBatch()
        guard !records.isEmpty else { return RelayPass() }
        var pass = RelayPass(claimed: records.count)
        var results: [Result<Void, ProdReadyError>]
        do {
            results = try await sink.publish(records)
            if results.count != records.count {
                let mismatch = ProdReadyError(.protocolError, "the sink answered \(results.count) results for \(records.count) records")
                results = Array(repeating: .failure(mismatch), count: records.count)
            }
        } catch {
            let failure = (error as? ProdReadyError) ?? ProdReadyError(.serverError, "\(error)", underlying: error)
            results = Array(repeating: .failure(failure), count: records.count)
        }
        var published: [Int64] = []
        var failed: [(record: OutboxRecord, error: ProdReadyError)] = []
        for (record, result) in zip(records, results) {
            switch result {
            case .success: published.append(record.id)
            case .failure(let error): failed.append((record, error))
            }
        }
        if !published.isEmpty {
            try await markPublished(published)
            pass.published = published.count
            publishedCounter.increment(by: published.count)
        }
        if !failed.isEmpty {
            try await markFailed(failed)
            pass.parked = failed.filter { $0.record.retryCount + 1 > $0.record.maxRetries }.count
            pass.failed = failed.count - pass.parked
            failedCounter.increment(by: failed.count)
            if pass.parked > 0 {
                parkedCounter.increment(by: pass.parked)
                logger.error("outbox rows parked after their last retry", metadata: ["count": "\(pass.parked)", "relay": "\(options.relayID)"])
            }
        }
        return pass
    }

    func claimBatch() async throws -> [OutboxRecord] {
        let s = schema.quoted
        let limit = options.batchSize
        let relayID = options.relayID
        let timeoutMilliseconds = options.claimTimeout.wholeMilliseconds
        // Three candidate sources, each served by its partial index; SKIP LOCKED makes concurrent relays
        // take disjoint rows instead of queueing behind each other.
        let query: PostgresQuery = """
            WITH fresh AS (
                SELECT id FROM \(unescaped: s).outbox_events WHERE status = 'pending'
                ORDER BY id LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), retryable AS (
                SELECT id FROM \(unescaped: s).outbox_events
                WHERE status = 'failed' AND retry_count <= max_retries AND next_retry_at <= now()
                ORDER BY next_retry_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), abandoned AS (
                SELECT id FROM \(unescaped: s).outbox_events WHERE status = 'processing' AND claimed_until < now()
                ORDER BY claimed_until LIMIT \(limit) FOR UPDATE SKIP LOCKED
            ), picked AS (
                SELECT id FROM (SELECT id FROM fresh UNION ALL SELECT id FROM retryable UNION ALL SELECT id FROM abandoned) candidates
                ORDER BY id LIMIT \(limit)
            )
            UPDATE \(unescaped: s).outbox_events o
            SET status = 'processing', claimed_by = \(relayID),
                claimed_until = now() + \(timeoutMilliseconds) * interval '1 millisecond', updated_at = now()
            FROM picked WHERE o.id = picked.id
            RETURNING o.id, o.event_id, o.event_type, o.event_data::text, o.source, o.subject, o.event_data->>'aggregate_id',
                      o.correlation_id, o.idempotency_key, o.retry_count, o.max_retries
            """
        do {
            let rows = try await client.query(query, logger: logger).collect()
            return try rows.map { row in
                let (id, eventID, type, data, source, subject, aggregate, correlation, key, retries, maxRetries) =
                    try row.decode((Int64, String, String, String, String, String?, String?, String?, String?, Int, Int).self)
                return OutboxRecord(
                    id: id, eventID: eventID, eventType: type, eventData: Array(data.utf8), source: source, subject: subject,
                    aggregateID: aggregate, correlationID: correlation, idempotencyKey: key, retryCount: retries, maxRetries: maxRetries
                )
            }.sorted { $0.id < $1.id }
        } catch {
            throw ProdReadyError.postgres(error, doing: "claiming outbox rows")
        }
    }

    private func markPublished(_ ids: [Int64]) async throws {
        let query: PostgresQuery = """
            UPDATE \(unescaped: schema.quoted).outbox_events
            SET status = 'published', published_at = now(), updated_at = now(), claimed_by = NULL, claimed_until = NULL
            WHERE id = ANY(\(ids)) AND status = 'processing' AND claimed_by = \(options.relayID)
            """
        do {
            try await client.query(query, logger: logger)
        } catch {
            throw ProdReadyError.postgres(error, doing: "marking \(ids.count) outbox rows published")
        }
    }

    private func markFailed(_ failures: [(record: OutboxRecord, error: ProdReadyError)]) async throws {
        var random = SystemRandomNumberGenerator()
        let ids = failures.map(\.record.id)
        let delays = failures.map { options.retryBackoff.delay(attempt: $0.record.retryCount, using: &random).wholeMilliseconds }
        let messages = failures.map { String("\($0.error)".replacingAll("\u{0}", with: "\u{FFFD}").prefix(4000)) }
        let query: PostgresQuery = """
            UPDATE \(unescaped: schema.quoted).outbox_events o
            SET status = 'failed', retry_count = o.retry_count + 1,
                next_retry_at = CASE WHEN o.retry_count + 1 > o.max_retries THEN NULL
                                     ELSE now() + f.delay_ms * interval '1 millisecond' END,
                error_message = f.message, updated_at = now(), claimed_by = NULL, claimed_until = NULL
            FROM unnest(\(ids), \(delays), \(messages)) AS f(id, delay_ms, message)
            WHERE o.id = f.id AND o.status = 'processing' AND o.claimed_by = \(options.relayID)
            """
        do {
            try await client.query(query, logger: logger)
        } catch {
            throw ProdReadyError.postgres(error, doing: "recording \(failures.count) outbox publish failures")
        }
    }
}

/// A sink that inserts every published record into `<schema>.<table>` — one row per delivery, so a
/// duplicate delivery shows up as two rows. For tests, dry runs and benchmarks.
public struct PostgresTableSink: OutboxSink {
    public let client: PostgresClient
    public let schema: SQLIdentifier
    public let table: SQLIdentifier
    let logger: Logger

    public init(client: PostgresClient, schema: SQLIdentifier, table: SQLIdentifier, logger: Logger = reliabilityLogger) {
        self.client = client
        self.schema = schema
        self.table = table
        self.logger = logger
    }

    var qualifiedTable: String { "\(schema.quoted).\(table.quoted)" }

    /// Creates the table if it does not exist.
    public func prepare() async throws {
        let query = PostgresQuery(unsafeSQL: """
            CREATE TABLE IF NOT EXISTS \(qualifiedTable) (
                delivery_id bigserial PRIMARY KEY,
                event_id text NOT NULL,
                event_type text NOT NULL,
                subject text,
                event_data jsonb NOT NULL,
                delivered_at timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """)
        do {
            try await client.query(query, logger: logger)
        } catch {
            throw ProdReadyError.postgres(error, doing: "creating sink table \(table)")
        }
    }

    public func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        let ids = records.map(\.eventID)
        let types = records.map(\.eventType)
        let subjects = records.map { $0.subject ?? "" }
        let data = records.map { String(decoding: $0.eventData, as: UTF8.self) }
        let query: PostgresQuery = """
            INSERT INTO \(unescaped: qualifiedTable) (event_id, event_type, subject, event_data)
            SELECT u.e, u.t, nullif(u.s, ''), u.d::jsonb FROM unnest(\(ids), \(types), \(subjects), \(data)) AS u(e, t, s, d)
            """
        do {
            try await client.query(query, logger: logger)
        } catch {
            throw ProdReadyError.postgres(error, doing: "writing \(records.count) events to sink table \(table)")
        }
        return Array(repeating: .success(()), count: records.count)
    }
}
