import ProdReadyCore

/// What a polled condition reports each time it is checked.
public enum PollOutcome<Value: Sendable>: Sendable {
    case done(Value)
    /// Not yet; the text says what is still missing and ends up in the failure message.
    case pending(String)
}

/// Polls `probe` until it reports `.done`, or fails after `timeout` with a message naming what was still
/// missing (the last `.pending` text, or the last error the probe threw).
@discardableResult
public func eventually<Value: Sendable>(
    _ what: String,
    timeout: Duration = .seconds(15),
    interval: Duration = .milliseconds(50),
    _ probe: @Sendable () async throws -> PollOutcome<Value>
) async throws -> Value {
    let clock = ContinuousClock()
    let start = clock.now
    var lastState = "never checked"
    var attempts = 0
    while true {
        attempts += 1
        do {
            switch try await probe() {
            case .done(let value): return value
            case .pending(let missing): lastState = missing
            }
        } catch {
            lastState = "probe failed: \(error)"
        }
        if clock.now - start >= timeout {
            throw ProdReadyError(.timeout, "timed out after \(timeout) waiting for \(what) (\(attempts) checks); still missing: \(lastState)")
        }
        try await Task.sleep(for: interval)
    }
}

/// `eventually` for a condition that is simply true or false; `missing` describes the false state.
public func eventually(
    _ what: String,
    timeout: Duration = .seconds(15),
    interval: Duration = .milliseconds(50),
    missing: @Sendable @escaping () -> String = { "condition still false" },
    _ condition: @Sendable () async throws -> Bool
) async throws {
    let _: Bool = try await eventually(what, timeout: timeout, interval: interval) {
        try await condition() ? .done(true) : .pending(missing())
    }
}
