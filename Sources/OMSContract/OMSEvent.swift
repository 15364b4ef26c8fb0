public import Foundation
public import ProdReadyCore
import Crypto

/// One record of the OMS event store, as stored in S3 and published to Kafka: a command a client sent, the
/// domain event a worker derived from it, or the tombstone that closes a sequence nobody wrote. This is the wire
/// contract: the audit service and any other reader decode these bytes, not the OMS's Swift types.
public struct OMSEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        case command
        case domain
        /// Closes a reserved sequence whose writer never wrote it, so the publisher's tail moves on.
        case tombstone
    }

    public var eventID: String
    public var kind: Kind
    /// `CREATE_DATABASE`, `CREATE_INSTANCE`, … for commands; `INSTANCE_CREATED`, … for domain events.
    public var eventType: String
    public var database: String
    /// The database-wide sequence: the event's place in the store and in the key order.
    public var sequence: Int64
    /// `"<database>:<class>:<instance id>"` for instances, `"<database>"` for the database itself.
    public var aggregateID: String
    /// The aggregate's own version this event moves it to (the optimistic-concurrency sequence).
    public var aggregateSequence: Int64
    public var commandID: String
    public var actor: String
    public var tenant: String
    public var occurredAt: Date
    public var correlationID: String?
    public var payload: JSONValue

    enum CodingKeys: String, CodingKey {
        case eventID = "event_id", kind, eventType = "event_type", database, sequence, aggregateID = "aggregate_id"
        case aggregateSequence = "aggregate_seq", commandID = "command_id", actor, tenant, occurredAt = "occurred_at"
        case correlationID = "correlation_id", payload
    }

    public init(
        eventID: String, kind: Kind, eventType: String, database: String, sequence: Int64 = 0, aggregateID: String,
        aggregateSequence: Int64, commandID: String, actor: String, tenant: String, occurredAt: Date = Date(),
        correlationID: String? = nil, payload: JSONValue
    ) {
        self.eventID = eventID
        self.kind = kind
        self.eventType = eventType
        self.database = database
        self.sequence = sequence
        self.aggregateID = aggregateID
        self.aggregateSequence = aggregateSequence
        self.commandID = commandID
        self.actor = actor
        self.tenant = tenant
        self.occurredAt = occurredAt
        self.correlationID = correlationID
        self.payload = payload
    }

    /// sha256 (hex) of the canonical JSON of type, aggregate and payload: what decides whether a reused event id
    /// is an idempotent retry (same hash) or a conflicting reuse.
    public var contentHash: String {
        let canonical: JSONValue = ["type": .string(eventType), "aggregate": .string(aggregateID), "payload": payload]
        return SHA256.hash(data: canonical.encoded()).map { String(format: "%02x", $0) }.joined()
    }

    public func encoded() -> [UInt8] {
        (try? Array(OMSEvent.encoder.encode(self))) ?? []
    }

    public static func decode(_ bytes: some Collection<UInt8>) throws -> OMSEvent {
        do {
            return try decoder.decode(OMSEvent.self, from: Data(bytes))
        } catch {
            throw ProdReadyError(.invalidArgument, "not an OMS event: \(error)", underlying: error)
        }
    }

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(OMSEvent.timestamp(date))
        }
        return encoder
    }()

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = InternetTime.parse(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an RFC 3339 time: \(text)"))
            }
            return date
        }
        return decoder
    }()

    /// RFC 3339 with milliseconds, UTC.
    public static func timestamp(_ date: Date) -> String { InternetTime.format(date) }
}

/// Name-based UUIDs (RFC 9562 version 5: SHA-1 of a namespace and a name).
public enum UUIDv5 {
    /// The RFC's URL namespace, 6ba7b811-9dad-11d1-80b4-00c04fd430c8.
    public static let urlNamespace: [UInt8] = [0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8]

    public static func make(namespace: [UInt8] = urlNamespace, name: String) -> String {
        var bytes = Array(Insecure.SHA1.hash(data: namespace + Array(name.utf8)).prefix(16))
        bytes[6] = (bytes[6] & 0x0f) | 0x50
        bytes[8] = (bytes[8] & 0x3f) | 0x80
        let hex = bytes.map { String(format: "%02x", $0) }.joined()
        let characters = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(characters[$0]) }.joined(separator: "-")
    }

    /// The OMS's deterministic domain event id: a redelivered command yields the same event.
    public static func domainEventID(commandID: String, eventType: String, aggregateID: String) -> String {
        make(name: "oms:\(commandID):\(eventType):\(aggregateID)")
    }
}
