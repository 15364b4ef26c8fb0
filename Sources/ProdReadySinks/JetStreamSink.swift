public import ProdReadyCore
public import ProdReadyNATS
public import ProdReadyReliability

/// An outbox sink that publishes each event to JetStream with `Nats-Msg-Id` = the event id, so the stream
/// stores an event once even when the relay publishes it again (after a lost ack or a relay crash) within
/// the stream's duplicate window. A batch is published asynchronously with a window and every row gets its
/// own outcome.
public struct JetStreamSink: OutboxSink {
    public let connection: NATSConnection
    public let window: Int
    public let ackTimeout: Duration
    /// The subject an event goes to: by default the outbox row's subject.
    private let subject: @Sendable (OutboxRecord) -> String?

    public init(
        connection: NATSConnection,
        window: Int = 256,
        ackTimeout: Duration = .seconds(10),
        subject: @escaping @Sendable (OutboxRecord) -> String? = { $0.subject }
    ) throws {
        guard (1...65_536).contains(window) else { throw ProdReadyError(.invalidArgument, "the publish window must be 1 to 65,536, got \(window)") }
        guard ackTimeout >= .milliseconds(1) else { throw ProdReadyError(.invalidArgument, "the ack timeout must be at least 1 ms, got \(ackTimeout)") }
        self.connection = connection
        self.window = window
        self.ackTimeout = ackTimeout
        self.subject = subject
    }

    public func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        try await publishRows(records) { record in
            guard let subject = subject(record), !subject.isEmpty else {
                return .failure(ProdReadyError(.invalidArgument, "outbox row \(record.id) (event \(record.eventID)) names no JetStream subject: set its subject"))
            }
            do {
                // A malformed subject fails its own row, not the batch.
                try NATSSubject.validate(subject, wildcardsAllowed: false)
            } catch {
                return .failure(error as? ProdReadyError ?? ProdReadyError(.invalidArgument, "\(error)"))
            }
            return .success(JetStreamOutgoing(subject: subject, payload: record.eventData, messageID: record.eventID))
        } send: { messages in
            try await connection.publishAsync(messages, window: window, timeout: ackTimeout).map { $0.map { _ in () } }
        }
    }
}
