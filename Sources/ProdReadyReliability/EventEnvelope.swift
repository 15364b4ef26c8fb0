public import Foundation
import ProdReadyCore

/// The payload of one kind of event. The type name and schema version live with the payload type, so a
/// producer and a consumer that share the type cannot disagree about either: a format change is a new
/// version (or a new type) that both sides see at compile time.
public protocol EventPayload: Codable, Sendable {
    /// The event's type name on the wire, e.g. `"OrderPlaced"`.
    static var eventType: String { get }
    /// The payload schema version this type encodes and decodes.
    static var schemaVersion: Int { get }
}

/// The one envelope every ProdReady event travels in — outbox rows, Kafka records, JetStream messages and
/// Redis entries alike. On the wire it is JSON:
/// `{"id","type","version","aggregate_id","sequence","occurred_at","correlation_id","causation_id","payload"}`.
public struct EventEnvelope<Payload: EventPayload>: Sendable {
    public var id: String
    public var aggregateID: String?
    public var sequence: Int64?
    public var occurredAt: Date
    public var correlationID: String?
    public var causationID: String?
    public var payload: Payload

    public var type: String { Payload.eventType }
    public var version: Int { Payload.schemaVersion }

    public init(
        id: String = UUID().uuidString.lowercased(),
        aggregateID: String? = nil,
        sequence: Int64? = nil,
        occurredAt: Date = Date(),
        correlationID: String? = nil,
        causationID: String? = nil,
        payload: Payload
    ) {
        self.id = id
        self.aggregateID = aggregateID
        self.sequence = sequence
        self.occurredAt = occurredAt
        self.correlationID = correlationID
        self.causationID = causationID
        self.payload = payload
    }

    /// The JSON bytes of this envelope.
    public func encoded() throws -> [UInt8] {
        do {
            return Array(try EnvelopeCoding.encoder.encode(WireEnvelope(self)))
        } catch {
            throw ProdReadyError(.invalidArgument, "cannot encode \(type) v\(version) event \(id): \(error)", underlying: error)
        }
    }

    /// Decodes an envelope, refusing one whose type or version is not `Payload`'s with a message saying
    /// which was received — the consumer dead-letters it instead of misreading it.
    public static func decode(_ bytes: some Collection<UInt8>) throws -> EventEnvelope<Payload> {
        // Parsed once; the header and then the payload are read from the same tree.
        let document = try EnvelopeHeader.parse(bytes)
        let header = try EnvelopeHeader.decode(document)
        guard header.type == Payload.eventType, header.version == Payload.schemaVersion else {
            throw ProdReadyError(
                .invalidArgument,
                "event \(header.id) is \(header.type) v\(header.version); this consumer reads \(Payload.eventType) v\(Payload.schemaVersion)"
            )
        }
        do {
            guard case .object(let fields) = document, let payload = fields["payload"] else { throw ProdReadyError(.invalidArgument, "no payload") }
            return WireEnvelope(header: header, payload: try EnvelopeCoding.fastDecoder.decode(Payload.self, from: payload)).envelope
        } catch var error as DecodingError {
            // Paths are relative to the payload: put it in front, as a decoder of the whole envelope would.
            error = error.prefixed(by: EnvelopeHeader.CodingKeys.payload)
            throw ProdReadyError(.invalidArgument, "event \(header.id) (\(header.type) v\(header.version)) has a malformed payload: \(describe(error))", underlying: error)
        } catch {
            throw ProdReadyError(.invalidArgument, "event \(header.id) (\(header.type) v\(header.version)) has a malformed payload: \(describe(error))", underlying: error)
        }
    }
}

/// The type-independent fields of an envelope, read without knowing the payload type: what relays, sinks and
/// dead-letter handlers need.
public struct EnvelopeHeader: Sendable, Equatable, Codable {
    public var id: String
    public var type: String
    public var version: Int
    public var aggregateID: String?
    public var sequence: Int64?
    public var occurredAt: Date
    public var correlationID: String?
    public var causationID: String?

    enum CodingKeys: String, CodingKey {
        case id, type, version, sequence, payload
        case aggregateID = "aggregate_id"
        case occurredAt = "occurred_at"
        case correlationID = "correlation_id"
        case causationID = "causation_id"
    }

    /// The header of an envelope built in this process: nothing to parse.
    init<Payload: EventPayload>(_ envelope: EventEnvelope<Payload>) {
        id = envelope.id
        type = envelope.type
        version = envelope.version
        aggregateID = envelope.aggregateID
        sequence = envelope.sequence
        occurredAt = envelope.occurredAt
        correlationID = envelope.correlationID
        causationID = envelope.causationID
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        type = try container.decode(String.self, forKey: .type)
        version = try container.decode(Int.self, forKey: .version)
        aggregateID = try container.decodeIfPresent(String.self, forKey: .aggregateID)
        sequence = try container.decodeIfPresent(Int64.self, forKey: .sequence)
        occurredAt = try container.decode(Date.self, forKey: .occurredAt)
        correlationID = try container.decodeIfPresent(String.self, forKey: .correlationID)
        causationID = try container.decodeIfPresent(String.self, forKey: .causationID)
        guard container.contains(.payload) else {
            throw DecodingError.keyNotFound(CodingKeys.payload, .init(codingPath: [], debugDescription: "no payload"))
        }
    }

    /// Encodes every field but the payload, which `WireEnvelope` adds beside them.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(type, forKey: .type)
        try container.encode(version, forKey: .version)
        try container.encodeIfPresent(aggregateID, forKey: .aggregateID)
        try container.encodeIfPresent(sequence, forKey: .sequence)
        try container.encode(occurredAt, forKey: .occurredAt)
        try container.encodeIfPresent(correlationID, forKey: .correlationID)
        try container.encodeIfPresent(causationID, forKey: .causationID)
    }

    /// Parses and checks the envelope fields of `bytes`: valid JSON, an object, non-empty id and type,
    /// version ≥ 1, a `payload` member and an `occurred_at` timestamp.
    public static func decode(_ bytes: some Collection<UInt8>) throws -> EnvelopeHeader {
        try decode(try parse(bytes))
    }

    /// The JSON tree of an envelope's bytes; an error that says whether they were JSON at all, and an object.
    static func parse(_ bytes: some Collection<UInt8>) throws -> JSONValue {
        let document: JSONValue
        do {
            document = try JSONValue.parse(bytes)
        } catch {
            throw ProdReadyError(.invalidArgument, "the event is not valid JSON (\(bytes.count) bytes): \((error as? ProdReadyError)?.message ?? "\(error)")", underlying: error)
        }
        guard case .object = document else { throw ProdReadyError(.invalidArgument, "an event envelope must be a JSON object") }
        return document
    }

    /// The header of a parsed envelope, checked.
    static func decode(_ document: JSONValue) throws -> EnvelopeHeader {
        let header: EnvelopeHeader
        do {
            header = try EnvelopeCoding.fastDecoder.decode(EnvelopeHeader.self, from: document)
        } catch {
            throw ProdReadyError(.invalidArgument, "the event envelope is incomplete: \(describe(error))", underlying: error)
        }
        try header.validate()
        return header
    }

    func validate() throws {
        guard !id.isEmpty else { throw ProdReadyError(.invalidArgument, "the event envelope has an empty id") }
        guard !type.isEmpty else { throw ProdReadyError(.invalidArgument, "event \(id) has an empty type") }
        guard version >= 1 else { throw ProdReadyError(.invalidArgument, "event \(id) has version \(version); versions start at 1") }
    }
}

/// The wire form: the header's fields and `payload`, side by side in one JSON object. Written with `JSONEncoder`;
/// read from the parsed tree by `EventEnvelope.decode`.
struct WireEnvelope<Payload: EventPayload>: Encodable {
    var header: EnvelopeHeader
    var payload: Payload

    init(header: EnvelopeHeader, payload: Payload) {
        self.header = header
        self.payload = payload
    }

    init(_ envelope: EventEnvelope<Payload>) {
        self.init(header: EnvelopeHeader(envelope), payload: envelope.payload)
    }

    func encode(to encoder: any Encoder) throws {
        try header.encode(to: encoder)
        var container = encoder.container(keyedBy: EnvelopeHeader.CodingKeys.self)
        try container.encode(payload, forKey: .payload)
    }

    var envelope: EventEnvelope<Payload> {
        EventEnvelope(
            id: header.id, aggregateID: header.aggregateID, sequence: header.sequence, occurredAt: header.occurredAt,
            correlationID: header.correlationID, causationID: header.causationID, payload: payload
        )
    }
}

enum EnvelopeCoding {
    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(date))
        }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    /// The decoder of the hot paths (every consumer reads every event through it): no Foundation `JSONDecoder`,
    /// and timestamps read by `InternetTime` first, which is what producers write.
    static let fastDecoder = JSONValueDecoder(date: { text in
        if let date = InternetTime.parse(text) { return date }
        if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return date }
        return try? Date.ISO8601FormatStyle().parse(text)
    })

}

/// A decoding error as one line: which field, and what was wrong with it.
func describe(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "\(error)" }
    func path(_ context: DecodingError.Context) -> String {
        let path = context.codingPath.map(\.stringValue).joined(separator: ".")
        return path.isEmpty ? "" : " at '\(path)'"
    }
    switch error {
    case .keyNotFound(let key, let context): return "missing '\(key.stringValue)'\(path(context))"
    case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
        return "\(context.debugDescription)\(path(context))"
    @unknown default: return "\(error)"
    }
}

extension DecodingError {
    /// The same error with `key` in front of its coding path.
    func prefixed(by key: any CodingKey) -> DecodingError {
        func context(_ context: Context) -> Context { Context(codingPath: [key] + context.codingPath, debugDescription: context.debugDescription, underlyingError: context.underlyingError) }
        switch self {
        case .keyNotFound(let missing, let c): return .keyNotFound(missing, context(c))
        case .typeMismatch(let type, let c): return .typeMismatch(type, context(c))
        case .valueNotFound(let type, let c): return .valueNotFound(type, context(c))
        case .dataCorrupted(let c): return .dataCorrupted(context(c))
        @unknown default: return self
        }
    }
}
