import ProdReadyCore

/// Exponential backoff with full jitter: the delay before retry `n` (0-based) is drawn uniformly from
/// `[0, min(cap, base · 2ⁿ)]`, which spreads a crowd of retrying clients instead of synchronising them.
public struct Backoff: Sendable, Equatable {
    public var base: Duration
    public var cap: Duration

    public init(base: Duration, cap: Duration) {
        self.base = max(base, .zero)
        self.cap = max(cap, self.base)
    }

    /// The upper bound of the delay before retry `attempt`.
    public func ceiling(attempt: Int) -> Duration {
        let baseNanoseconds = base.wholeNanoseconds
        let capNanoseconds = cap.wholeNanoseconds
        guard baseNanoseconds > 0 else { return .zero }
        let exponent = min(max(attempt, 0), 62)
        let (scaled, overflow) = baseNanoseconds.multipliedReportingOverflow(by: Int64(1) << exponent)
        return .nanoseconds(overflow ? capNanoseconds : min(scaled, capNanoseconds))
    }

    public func delay(attempt: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let ceiling = ceiling(attempt: attempt).wholeNanoseconds
        guard ceiling > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...ceiling, using: &random))
    }
}

/// How often and how long to retry: every loop that retries is bounded by both.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var maxElapsed: Duration
    public var backoff: Backoff

    public init(maxAttempts: Int = 5, maxElapsed: Duration = .seconds(30), backoff: Backoff = Backoff(base: .milliseconds(50), cap: .seconds(2))) {
        self.maxAttempts = max(1, maxAttempts)
        self.maxElapsed = maxElapsed
        self.backoff = backoff
    }

    /// Runs `operation` until it succeeds, throws a non-retriable error, or the attempts or time run out;
    /// then rethrows the last error. Only `ProdReadyError`s marked retriable are retried.
    public func run<Result>(
        using random: inout some RandomNumberGenerator,
        clock: ContinuousClock = ContinuousClock(),
        _ operation: () async throws -> Result
    ) async throws -> Result {
        let start = clock.now
        var attempt = 0
        while true {
            do {
                return try await operation()
            } catch let error as ProdReadyError where error.isRetriable {
                attempt += 1
                let delay = backoff.delay(attempt: attempt - 1, using: &random)
                guard attempt < maxAttempts, clock.now - start + delay <= maxElapsed else { throw error }
                try await Task.sleep(for: delay)
            }
        }
    }
}
