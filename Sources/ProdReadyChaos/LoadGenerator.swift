public import ProdReadyVerification
import Synchronization

/// What one operation of a load generator came to, by the id its effect will carry.
public enum LoadOutcome: Sendable, Equatable {
    case acknowledged(String)
    /// Refused for certain (a 4xx, a 503 before anything was written): its effect must never appear.
    case refused(String)
    /// No answer the client can trust (a timeout, a dropped connection).
    case indeterminate(String)
}

/// Keeps operations flowing at a bounded rate, with a bounded number in flight, while faults come and go, and
/// records every outcome in a ledger with the instant it was known, so a report can say how many were
/// acknowledged during a fault.
public final class LoadGenerator: Sendable {
    public let ledger: OperationLedger
    private let interval: Duration
    private let maxInFlight: Int
    private let send: @Sendable (Int) async -> LoadOutcome
    private let acknowledgements = Mutex<[ContinuousClock.Instant]>([])
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// - Parameters:
    ///   - rate: operations started per second, at most.
    ///   - maxInFlight: operations waiting for an answer at once, at most; a slow service slows the load down
    ///     instead of piling requests up.
    ///   - send: sends operation `index` and says what came of it.
    public init(ledger: OperationLedger, rate: Int, maxInFlight: Int, send: @escaping @Sendable (Int) async -> LoadOutcome) {
        self.ledger = ledger
        self.interval = .nanoseconds(1_000_000_000 / Int64(max(1, rate)))
        self.maxInFlight = max(1, maxInFlight)
        self.send = send
    }

    /// Starts sending in the background until `stop()`.
    public func start() {
        let newTask = Task { [self] in await run() }
        task.withLock { $0 = newTask }
    }

    /// Stops starting operations and waits for those in flight to be answered.
    public func stop() async {
        guard let running = task.withLock({ $0 }) else { return }
        running.cancel()
        await running.value
    }

    /// Acknowledgements so far, and how many arrived between `from` and `to`.
    public var acknowledgedCount: Int { acknowledgements.withLock { $0.count } }
    public func acknowledged(from: ContinuousClock.Instant, to: ContinuousClock.Instant) -> Int {
        acknowledgements.withLock { $0.count { $0 >= from && $0 <= to } }
    }

    private func run() async {
        let clock = ContinuousClock()
        await withTaskGroup(of: Void.self) { group in
            var index = 0
            var inFlight = 0
            var next = clock.now
            while !Task.isCancelled {
                if inFlight >= maxInFlight {
                    await group.next()
                    inFlight -= 1
                    continue
                }
                do { try await clock.sleep(until: next) } catch { break }
                next = max(next + interval, clock.now - interval)
                let operation = index
                index += 1
                inFlight += 1
                group.addTask { [self] in
                    // The operation itself is not cancelled with the generator: its answer must be recorded.
                    let outcome = await Task { await send(operation) }.value
                    record(outcome, at: clock.now)
                }
            }
            await group.waitForAll()
        }
    }

    private func record(_ outcome: LoadOutcome, at instant: ContinuousClock.Instant) {
        switch outcome {
        case .acknowledged(let id):
            ledger.acknowledged(id)
            acknowledgements.withLock { $0.append(instant) }
        case .refused(let id): ledger.refused(id)
        case .indeterminate(let id): ledger.indeterminate(id)
        }
    }
}
