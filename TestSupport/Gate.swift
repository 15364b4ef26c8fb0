import Synchronization
public import ProdReadyCore

/// A one-shot gate: whoever waits is held until someone opens it, then every waiter (and every later one) goes
/// on. Tests use gates to force an interleaving — "relay A is inside its publish", "now let it fail" — instead
/// of sleeping and hoping the scheduler picks the order they meant.
public final class Gate: Sendable {
    public let name: String
    private let state = Mutex<(isOpen: Bool, waiters: [UInt64: CheckedContinuation<Void, Never>], nextID: UInt64)>((false, [:], 0))

    public init(_ name: String) { self.name = name }

    public var isOpen: Bool { state.withLock { $0.isOpen } }

    /// Opens the gate for every waiter, present and future.
    public func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.isOpen = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        waiters.forEach { $0.resume() }
    }

    /// Waits until the gate is open, failing with a `timeout` that names the gate if nobody opened it in time.
    public func wait(upTo deadline: Duration = .seconds(30)) async throws {
        let name = self.name
        try await withDeadline(deadline, timeoutError: { ProdReadyError(.timeout, "gate '\(name)' was not opened within \(deadline)") }) {
            await self.waitUntilOpen()
        }
    }

    private func waitUntilOpen() async {
        let id = state.withLock { state -> UInt64? in
            if state.isOpen { return nil }
            state.nextID += 1
            return state.nextID
        }
        guard let id else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if state.isOpen || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
    }
}
