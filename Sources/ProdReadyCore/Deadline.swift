import Synchronization

/// Runs `body` but gives up after `deadline`, throwing `timeoutError()` (by default a retriable `timeout`, "no
/// answer within …") without waiting for `body` to notice.
///
/// For calls that may wait indefinitely in a library that does not bound them (a connection pool that keeps
/// retrying an unreachable server while a query waits for a connection): `body` runs in a task of its own that
/// is cancelled when the deadline passes or the caller is cancelled, and the caller returns at once either way.
///
/// `executor` is where `body` runs (an unstructured task does not inherit the caller's executor preference): a
/// caller pinned to a connection's event loop passes that loop's executor so the work stays on its thread.
public func withDeadline<Value: Sendable>(
    _ deadline: Duration,
    executor: (any TaskExecutor)? = nil,
    timeoutError: (@Sendable () -> any Error)? = nil,
    _ body: @escaping @Sendable () async throws -> Value
) async throws -> Value {
    let timeoutError = timeoutError ?? { ProdReadyError(.timeout, "no answer within \(deadline)", retriable: true) }
    let outcome = FirstOutcome<Value>()
    let work = Task(executorPreference: executor) {
        do { outcome.offer(.success(try await body())) } catch { outcome.offer(.failure(error)) }
    }
    let expire: @Sendable () -> Void = {
        if outcome.offer(.failure(timeoutError())) { work.cancel() }
    }
    let cancelTimer: @Sendable () -> Void
    if let scheduler = executor as? any TimerScheduling {
        cancelTimer = scheduler.schedule(after: deadline, expire)
    } else {
        let timer = Task {
            try await Task.sleep(for: deadline)
            expire()
        }
        cancelTimer = { timer.cancel() }
    }
    defer { cancelTimer() }
    return try await withTaskCancellationHandler {
        try await outcome.value()
    } onCancel: {
        work.cancel()
        outcome.offer(.failure(CancellationError()))
    }
}

/// An executor that can also run a callback after a delay. `withDeadline` on such an executor arms one timer
/// on it instead of a sleeping task per call (a task and a dispatch timer each time, on a hot path).
public protocol TimerScheduling: TaskExecutor {
    /// Runs `action` after `delay` unless the returned function is called first.
    func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> @Sendable () -> Void
}

/// The first of several competing results; later ones are dropped.
private final class FirstOutcome<Value: Sendable>: Sendable {
    private struct State {
        var result: Result<Value, any Error>?
        var waiter: CheckedContinuation<Value, any Error>?
    }
    private let state = Mutex(State())

    /// Whether `result` was the first (and so the one the waiter gets).
    @discardableResult
    func offer(_ result: Result<Value, any Error>) -> Bool {
        let (accepted, waiter): (Bool, CheckedContinuation<Value, any Error>?) = state.withLock { state in
            guard state.result == nil else { return (false, nil) }
            state.result = result
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.resume(with: result)
        return accepted
    }

    func value() async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<Value, any Error>? = state.withLock { state in
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
