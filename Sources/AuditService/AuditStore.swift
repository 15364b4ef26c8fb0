public import AuditContract
public import Foundation
public import Logging
public import PostgresNIO
public import ProdReadyCore
public import ProdReadyPostgres
public import ProdReadyReliability

/// An audit event as the consumer received it: decoded, or the reason it could not be.
public struct ReceivedAuditMessage: Sendable {
    public enum Content: Sendable {
        case event(EventEnvelope<AuditRecord>)
        /// Undecodable or invalid: stored as a dead letter with the raw bytes and the reason.
        case poison(reason: String, eventID: String?)
    }
    public var content: Content
    public var subject: String
    public var stream: String
    public var streamSequence: UInt64
    public var raw: [UInt8]

    public init(content: Content, subject: String, stream: String, streamSequence: UInt64, raw: [UInt8]) {
        self.content = content
        self.subject = subject
        self.stream = stream
        self.streamSequence = streamSequence
        self.raw = raw
    }

    /// Decodes a message's bytes: a valid audit envelope, or poison with the reason.
    public static func decode(_ raw: [UInt8], subject: String, stream: String, streamSequence: UInt64) -> ReceivedAuditMessage {
        let content: Content
        do {
            let envelope = try EventEnvelope<AuditRecord>.decode(raw)
            let problems = envelope.payload.problems + (envelope.id.isEmpty || envelope.id.utf8.count > 200 ? ["the event id must be 1 to 200 bytes"] : [])
            content = problems.isEmpty ? .event(envelope) : .poison(reason: "invalid audit event: " + problems.joined(separator: "; "), eventID: envelope.id)
        } catch {
            content = .poison(reason: "undecodable: \(error)", eventID: (try? EnvelopeHeader.decode(raw))?.id)
        }
        return ReceivedAuditMessage(content: content, subject: subject, stream: stream, streamSequence: streamSequence, raw: raw)
    }
}

/// What storing one batch did.
public struct AuditBatchOutcome: Sendable, Equatable {
    /// Event ids stored now.
    public var stored: [String] = []
    /// Events already stored before (a redelivery or a second publish): absorbed.
    public var duplicates = 0
    public var deadLettered = 0
}

/// The audit service's Postgres side: storing batches exactly once, and the queries of the API.
public struct AuditStore: Sendable {
    public let client: PostgresClient
    public let schema: SQLIdentifier
    let logger: Logger
    let deadline: Duration

    public init(client: PostgresClient, schema: SQLIdentifier, logger: Logger, deadline: Duration = .seconds(10)) {
        self.client = client
        self.schema = schema
        self.logger = logger
        self.deadline = deadline
    }

    var s: String { schema.quoted }

    func rows(_ query: PostgresQuery, _ doing: String) async throws -> [PostgresRow] {
        try await queryRows(client, query, deadline: deadline, doing: doing, logger: logger)
    }

    /// Stores a batch in one transaction: each event once (by event id) with its tracking row for `consumer`, each
    /// poison message as a dead letter (once per stream sequence). Nothing is acknowledged before this returns.
    /// `fetchedAt` is when the consumer received the batch: the tracking rows' processing time counts from there.
    public func store(_ batch: [ReceivedAuditMessage], consumer: String, fetchedAt: Date = Date()) async throws -> AuditBatchOutcome {
        var events: [JSONValue] = []
        var poison: [JSONValue] = []
        var seen: Set<String> = []
        var repeatedInBatch = 0
        for message in batch {
            switch message.content {
            case .event(let envelope):
                // The same event twice in one batch (published twice within moments): one row.
                guard seen.insert(envelope.id).inserted else { repeatedInBatch += 1; continue }
                events.append(Self.row(envelope))
            case .poison(let reason, let eventID):
                poison.append([
                    "stream": .string(message.stream), "stream_sequence": .int(Int(message.streamSequence)), "subject": .string(message.subject),
                    "event_id": eventID.map(JSONValue.string) ?? .null, "raw": .string(Data(message.raw).base64EncodedString()), "reason": .string(String(reason.prefix(2000))),
                ])
            }
        }
        let eventsJSON = JSONValue.array(events).text
        let poisonJSON = JSONValue.array(poison).text
        let (eventCount, poisonCount, repeated) = (events.count, poison.count, repeatedInBatch)
        let logger = self.logger
        let s = self.s
        return try await withDeadline(deadline, timeoutError: { ProdReadyError(.timeout, "storing \(batch.count) audit events: no answer from Postgres within \(self.deadline)", retriable: true) }) {
            // A statement's error reaches here as the driver's; classified, a refused value (SQLSTATE 22…/23…) is
            // `invalid_argument`, which the consumer handles apart from an outage.
            try await classifyingPostgresErrors(doing: "storing \(batch.count) audit events") {
            try await withPostgresTransaction(client, logger: logger, doing: "storing \(batch.count) audit events") { connection in
                var outcome = AuditBatchOutcome()
                if eventCount > 0 {
                    let insert: PostgresQuery = """
                        WITH r AS (
                            SELECT * FROM jsonb_to_recordset(\(eventsJSON)::jsonb) AS r(
                                event_id text, event_type text, action text, actor_id text, actor_username text, actor_email text, actor_roles jsonb,
                                actor_tenant_id text, target_resource_type text, target_resource_id text, target_resource_name text, target_branch text,
                                success boolean, error_code text, error_message text, duration_ms integer, request_id text, correlation_id text,
                                causation_id text, changes jsonb, metadata jsonb, tags jsonb, event_time timestamptz)
                        ), stored AS (
                            INSERT INTO \(unescaped: s).audit_events (
                                event_id, event_type, action, actor_id, actor_username, actor_email, actor_roles, actor_tenant_id,
                                target_resource_type, target_resource_id, target_resource_name, target_branch, success, error_code, error_message,
                                duration_ms, request_id, correlation_id, causation_id, changes, metadata, tags, event_time)
                            SELECT event_id, event_type, action, actor_id, actor_username, actor_email,
                                ARRAY(SELECT jsonb_array_elements_text(coalesce(actor_roles, '[]'::jsonb))), actor_tenant_id,
                                target_resource_type, target_resource_id, target_resource_name, target_branch, success, error_code, error_message,
                                duration_ms, request_id, correlation_id, causation_id, changes, metadata, tags, event_time
                            FROM r
                            ON CONFLICT (event_id) DO NOTHING
                            RETURNING event_id, event_type, event_time
                        ), tracked AS (
                            INSERT INTO \(unescaped: s).event_consumer_tracking (consumer_name, event_id, event_type, processing_duration_ms, status)
                            SELECT \(consumer), event_id, event_type, least(2147483647, greatest(0, (extract(epoch FROM clock_timestamp() - \(fetchedAt)::timestamptz) * 1000)))::integer, 'success'
                            FROM stored
                            ON CONFLICT (consumer_name, event_id) DO NOTHING
                        )
                        SELECT event_id FROM stored
                        """
                    outcome.stored = try await connection.query(insert, logger: logger).collect().map { try $0.decode(String.self) }
                }
                outcome.duplicates = eventCount - outcome.stored.count + repeated
                if poisonCount > 0 {
                    let insert: PostgresQuery = """
                        WITH r AS (
                            SELECT * FROM jsonb_to_recordset(\(poisonJSON)::jsonb) AS r(stream text, stream_sequence bigint, subject text, event_id text, raw text, reason text)
                        ), letters AS (
                            INSERT INTO \(unescaped: s).audit_dead_letters (stream, stream_sequence, subject, event_id, raw, reason)
                            SELECT stream, stream_sequence, subject, event_id, decode(raw, 'base64'), reason FROM r
                            ON CONFLICT (stream, stream_sequence) DO NOTHING
                            RETURNING stream, stream_sequence, event_id, reason
                        ), tracked AS (
                            INSERT INTO \(unescaped: s).event_consumer_tracking (consumer_name, event_id, status, error_message)
                            SELECT \(consumer), coalesce(event_id, stream || ':' || stream_sequence), 'failed', reason FROM letters
                            ON CONFLICT (consumer_name, event_id) DO NOTHING
                        )
                        SELECT count(*)::bigint FROM letters
                        """
                    outcome.deadLettered = Int(try await connection.query(insert, logger: logger).collect().first?.decode(Int64.self) ?? 0)
                }
                return outcome
            }
            }
        }
    }

    func classifyingPostgresErrors<Value: Sendable>(doing: String, _ body: () async throws -> Value) async throws -> Value {
        do {
            return try await body()
        } catch let error as ProdReadyError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw ProdReadyError.postgres(error, doing: doing)
        }
    }

    /// One `audit_events` row as the JSON `jsonb_to_recordset` reads.
    static func row(_ envelope: EventEnvelope<AuditRecord>) -> JSONValue {
        let record = envelope.payload
        func text(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
        return [
            "event_id": .string(envelope.id), "event_type": .string(record.eventType), "action": .string(record.action),
            "actor_id": .string(record.actor.id), "actor_username": .string(record.actor.username), "actor_email": text(record.actor.email),
            "actor_roles": .array(record.actor.roles.map(JSONValue.string)), "actor_tenant_id": text(record.actor.tenantID),
            "target_resource_type": .string(record.target.resourceType), "target_resource_id": .string(record.target.resourceID),
            "target_resource_name": text(record.target.resourceName), "target_branch": text(record.target.branch),
            "success": .bool(record.success), "error_code": text(record.errorCode), "error_message": text(record.errorMessage),
            "duration_ms": record.durationMS.map(JSONValue.int) ?? .null, "request_id": text(record.requestID),
            "correlation_id": text(envelope.correlationID), "causation_id": text(envelope.causationID),
            "changes": record.changes ?? .null, "metadata": record.metadata ?? .null, "tags": record.tags.map { .array($0.map(JSONValue.string)) } ?? .null,
            "event_time": .string(InternetTime.format(envelope.occurredAt)),
        ]
    }
}
