public import PostgresNIO
import ProdReadyCore
public import ProdReadyPostgres
import Logging
import Synchronization

/// Enqueues outbox messages that record no business write of this database (a refused request, a write made
/// elsewhere), many callers' messages in one statement: while one INSERT is on its way, the messages that arrive
/// meanwhile wait and go together in the next. Nothing waits for a batch to fill, so a lone message costs one
/// single-row INSERT (no BEGIN and COMMIT round trips, as `Outbox.transaction` has), and a burst costs a statement
/// per round trip instead of one per message.
///
/// Each caller still learns its own message's outcome before it returns: stored, or refused because its event id
/// is in the outbox already (`precondition_failed`), or the statement's error. Each INSERT is atomic, so a
/// message is stored once or not at all. Measured on the OMS's refused writes: a burst of 401s at 1,100/s was
/// one single-row INSERT per request, and Postgres's share of the two cores was what kept the path under 1,000/s.
public final class OutboxGroupWriter: Sendable {
    public let client: PostgresClient
    public let schema: SQLIdentifier
    /// How long one INSERT may take; a caller waits at most for the statement on its way and its own.
    public let statementDeadline: Duration
    /// The most messages one INSERT takes.
    public let maximumBatch: Int
    let logger: Logger

    private struct Waiter {
        var message: OutboxMessage
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var waiting: [Waiter] = []
        var writing = false
        var statements = 0
        var stored = 0
    }
    private let state = Mutex(State())

    public init(client: PostgresClient, schema: SQLIdentifier, statementDeadline: Duration = .seconds(1), maximumBatch: Int = 500, logger: Logger = reliabilityLogger) {
        self.client = client
        self.schema = schema
        self.statementDeadline = statementDeadline
        self.maximumBatch = max(1, maximumBatch)
        self.logger = logger
    }

    /// INSERTs run and messages stored so far: how much grouping there was.
    public var counts: (statements: Int, stored: Int) { state.withLock { ($0.statements, $0.stored) } }

    /// Stores `message` in the outbox, in one statement with whatever else is waiting; returns once it is
    /// committed. An event id already in the outbox (or twice among the waiting) is refused for all but the first.
    public func enqueue(_ message: OutboxMessage) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let startWriting = state.withLock { state in
                state.waiting.append(Waiter(message: message, continuation: continuation))
                guard !state.writing else { return false }
                state.writing = true
                return true
            }
            if startWriting { Task { await self.writeUntilNoneWait() } }
        }
    }

    private func writeUntilNoneWait() async {
        while true {
            let batch: [Waiter] = state.withLock { state in
                guard !state.waiting.isEmpty else {
                    state.writing = false
                    return []
                }
                let taken = Array(state.waiting.prefix(maximumBatch))
                state.waiting.removeFirst(taken.count)
                return taken
            }
            guard !batch.isEmpty else { return }
            await write(batch)
        }
    }

    private func write(_ batch: [Waiter]) async {
        // One copy of each event id goes into the statement; a repeat is answered like an id already stored.
        var seen: Set<String> = []
        let unique = batch.map(\.message).filter { seen.insert($0.eventID).inserted }
        let (client, schema, logger, deadline) = (self.client, self.schema, self.logger, self.statementDeadline)
        let inserted: Set<String>
        do {
            let ids = try await withDeadline(statementDeadline, timeoutError: {
                ProdReadyError(.timeout, "enqueueing \(unique.count) outbox events: no answer from Postgres within \(deadline)", retriable: true)
            }) {
                try await OutboxTransaction.insertNew(unique, schema: schema, logger: logger) { query in try await client.query(query, logger: logger).collect() }
            }
            inserted = Set(ids)
        } catch {
            state.withLock { $0.statements += 1 }
            for waiter in batch { waiter.continuation.resume(throwing: error) }
            return
        }
        state.withLock { state in
            state.statements += 1
            state.stored += inserted.count
        }
        var answered: Set<String> = []
        for waiter in batch {
            let id = waiter.message.eventID
            if inserted.contains(id), answered.insert(id).inserted {
                waiter.continuation.resume()
            } else {
                waiter.continuation.resume(throwing: ProdReadyError(.preconditionFailed, "already in the outbox: \(id)"))
            }
        }
    }
}
