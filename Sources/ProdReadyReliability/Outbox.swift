public import PostgresNIO
import ProdReadyCore
public import ProdReadyPostgres
public import Foundation
import Logging

/// One event on its way out: an encoded `EventEnvelope` plus where it goes and how often to retry it.
public struct OutboxMessage: Sendable {
    public let header: EnvelopeHeader
    /// The envelope's JSON, stored as `event_data`.
    public let eventData: [UInt8]
    public var source: String
    /// The topic, subject or queue the sink delivers to.
    public var subject: String?
    public var idempotencyKey: String?
    /// Retries after the first attempt before the row is parked as a dead letter.
    public var maxRetries: Int

    public var eventID: String { header.id }
    public var eventType: String { header.type }

    /// The usual path: a typed envelope, which producer and consumer share.
    public init<Payload: EventPayload>(
        _ envelope: EventEnvelope<Payload>, source: String, subject: String? = nil, idempotencyKey: String? = nil, maxRetries: Int = 3
    ) throws {
        let header = EnvelopeHeader(envelope)
        try header.validate()
        try self.init(header: header, eventData: try envelope.encoded(), source: source, subject: subject, idempotencyKey: idempotencyKey, maxRetries: maxRetries)
    }

    /// For events that arrive already encoded (from another service): the bytes must be a complete envelope.
    public init(envelopeJSON: [UInt8], source: String, subject: String? = nil, idempotencyKey: String? = nil, maxRetries: Int = 3) throws {
        try self.init(header: try EnvelopeHeader.decode(envelopeJSON), eventData: envelopeJSON, source: source, subject: subject, idempotencyKey: idempotencyKey, maxRetries: maxRetries)
    }

    private init(header: EnvelopeHeader, eventData: [UInt8], source: String, subject: String?, idempotencyKey: String?, maxRetries: Int) throws {
        self.header = header
        try ProcessedEventRegistry.validateText(header.id, name: "event id")
        try ProcessedEventRegistry.validateText(header.type, name: "event type")
        try ProcessedEventRegistry.validateText(source, name: "source")
        if let subject { try ProcessedEventRegistry.validateText(subject, name: "subject") }
        guard (0...100).contains(maxRetries) else {
            throw ProdReadyError(.invalidArgument, "max retries must be between 0 and 100, got \(maxRetries)")
        }
        self.eventData = eventData
        self.source = source
        self.subject = subject
        self.idempotencyKey = idempotencyKey
        self.maxRetries = maxRetries
    }
}

/// A database transaction that can also enqueue outbox rows. It exists only inside `Outbox.transaction`,
/// so an event cannot be enqueued except together with the business write it describes.
public final class OutboxTransaction {
    /// The transaction's connection, for the business writes.
    public let connection: PostgresConnection
    let schema: SQLIdentifier
    let logger: Logger
    fileprivate var isOpen = true

    init(connection: PostgresConnection, schema: SQLIdentifier, logger: Logger) {
        self.connection = connection
        self.schema = schema
        self.logger = logger
    }

    /// Adds `message` to the outbox; it becomes visible to relays when the transaction commits.
    /// An event id already in the outbox is refused (`precondition_failed`), leaving the transaction usable.
    public func enqueue(_ message: OutboxMessage) async throws {
        try await enqueue(contentsOf: [message])
    }

    /// Adds many messages in one round trip.
    public func enqueue(contentsOf messages: [OutboxMessage]) async throws {
        guard isOpen else {
            throw ProdReadyError(.invalidArgument, "this outbox transaction has ended; enqueue inside the Outbox.transaction closure")
        }
        guard !messages.isEmpty else { return }
        let connection = self.connection
        let inserted = try await Self.insertNew(messages, schema: schema, logger: logger) { query in try await connection.query(query, logger: logger).collect() }
        if inserted.count != messages.count {
            let duplicates = Set(messages.map(\.eventID)).subtracting(inserted).sorted()
            throw ProdReadyError(.preconditionFailed, "already in the outbox: \(duplicates.prefix(5).joined(separator: ", "))\(duplicates.count > 5 ? " and \(duplicates.count - 5) more" : "")")
        }
    }

    /// The one INSERT that enqueues those of `messages` whose event id is not in the outbox yet; returns their ids.
    static func insertNew(_ messages: [OutboxMessage], schema: SQLIdentifier, logger: Logger, run: (PostgresQuery) async throws -> [PostgresRow]) async throws -> [String] {
        let ids = messages.map(\.eventID)
        guard Set(ids).count == ids.count else { throw ProdReadyError(.invalidArgument, "the batch repeats an event id") }
        let types = messages.map(\.eventType)
        let data = messages.map { String(decoding: $0.eventData, as: UTF8.self) }
        let sources = messages.map(\.source)
        let subjects = messages.map { $0.subject ?? "" }
        let correlations = messages.map { $0.header.correlationID ?? "" }
        let keys = messages.map { $0.idempotencyKey ?? "" }
        let retries = messages.map(\.maxRetries)
        let query: PostgresQuery = """
            INSERT INTO \(unescaped: schema.quoted).outbox_events
                (event_id, event_type, event_data, source, subject, correlation_id, idempotency_key, max_retries)
            SELECT u.e, u.t, u.d::jsonb, u.s, nullif(u.sub, ''), nullif(u.c, ''), nullif(u.k, ''), u.r
            FROM unnest(\(ids), \(types), \(data), \(sources), \(subjects), \(correlations), \(keys), \(retries)) AS u(e, t, d, s, sub, c, k, r)
            ON CONFLICT (event_id) DO NOTHING
            RETURNING event_id
            """
        do {
            return try await run(query).map { try $0.decode(String.self) }
        } catch {
            throw ProdReadyError.postgres(error, doing: "enqueueing \(messages.count) outbox events")
        }
    }
}

/// The transactional outbox of SPEC-reliability §3 on `<schema>.outbox_events`: the writing side, and what
/// operators need (counts, dead letters, requeue).
public struct Outbox: Sendable {
    public let client: PostgresClient
    public let schema: SQLIdentifier
    let logger: Logger

    public init(client: PostgresClient, schema: SQLIdentifier, logger: Logger = reliabilityLogger) {
        self.client = client
        self.schema = schema
        self.logger = logger
    }

    /// Runs `body` in one transaction: its business writes (on `transaction.connection`) and its enqueued
    /// events commit together or not at all.
    public func transaction<Result: Sendable>(_ body: (OutboxTransaction) async throws -> Result) async throws -> Result {
        let schema = self.schema
        let logger = self.logger
        return try await withPostgresTransaction(client, logger: logger, doing: "running an outbox transaction") { connection in
            let transaction = OutboxTransaction(connection: connection, schema: schema, logger: logger)
            defer { transaction.isOpen = false }
            return try await body(transaction)
        }
    }

    /// Rows per status (`pending`, `processing`, `published`, `failed`).
    public func statusCounts() async throws -> [String: Int] {
        let query: PostgresQuery = "SELECT status, count(*)::int8 FROM \(unescaped: schema.quoted).outbox_events GROUP BY status"
        var counts: [String: Int] = [:]
        do {
            for try await (status, count) in try await client.query(query, logger: logger).decode((String, Int64).self) {
                counts[status] = Int(count)
            }
        } catch {
            throw ProdReadyError.postgres(error, doing: "counting outbox rows")
        }
        return counts
    }

    /// Dead letters: `failed` rows that used up their retries, oldest first, with their last error.
    public func parked(limit: Int = 100) async throws -> [ParkedEvent] {
        let query: PostgresQuery = """
            SELECT event_id, event_type, subject, retry_count, max_retries, coalesce(error_message, ''), updated_at
            FROM \(unescaped: schema.quoted).outbox_events
            WHERE status = 'failed' AND retry_count > max_retries
            ORDER BY updated_at, id LIMIT \(limit)
            """
        do {
            return try await client.query(query, logger: logger).collect().map { row in
                let (id, type, subject, retries, maxRetries, error, updated) = try row.decode((String, String, String?, Int, Int, String, Date).self)
                return ParkedEvent(eventID: id, eventType: type, subject: subject, retryCount: retries, maxRetries: maxRetries, lastError: error, parkedAt: updated)
            }
        } catch {
            throw ProdReadyError.postgres(error, doing: "listing parked outbox rows")
        }
    }

    /// Puts failed rows back in line as fresh `pending` rows (retry count 0). `eventIDs` nil requeues every
    /// failed row. Returns how many were requeued; published or pending rows are never touched.
    @discardableResult
    public func requeue(eventIDs: [String]? = nil) async throws -> Int {
        let query: PostgresQuery
        if let eventIDs {
            query = """
                UPDATE \(unescaped: schema.quoted).outbox_events
                SET status = 'pending', retry_count = 0, next_retry_at = NULL, updated_at = now()
                WHERE status = 'failed' AND event_id = ANY(\(eventIDs)) RETURNING 1
                """
        } else {
            query = """
                UPDATE \(unescaped: schema.quoted).outbox_events
                SET status = 'pending', retry_count = 0, next_retry_at = NULL, updated_at = now()
                WHERE status = 'failed' RETURNING 1
                """
        }
        do {
            return try await client.query(query, logger: logger).collect().count
        } catch {
            throw ProdReadyError.postgres(error, doing: "requeueing failed outbox rows")
        }
    }
}

/// A row the relay gave up on, as operators see it.
public struct ParkedEvent: Sendable, Equatable {
    public var eventID: String
    public var eventType: String
    public var subject: String?
    public var retryCount: Int
    public var maxRetries: Int
    public var lastError: String
    public var parkedAt: Date
}
