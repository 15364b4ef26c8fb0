import ProdReadyCore
public import Metrics
import Synchronization

/// A monotonic clock the breaker reads; tests substitute `ManualClock` to step through cooldowns.
public protocol MonotonicClock: Sendable {
    /// Time since an arbitrary fixed origin.
    func now() -> Duration
}

/// The process's monotonic clock.
public struct SystemMonotonicClock: MonotonicClock {
    private let origin = ContinuousClock.now
    public init() {}
    public func now() -> Duration { ContinuousClock.now - origin }
}

/// A clock that moves only when told to.
public final class ManualClock: MonotonicClock {
    private let current = Mutex<Duration>(.zero)
    public init() {}
    public func now() -> Duration { current.withLock { $0 } }
    public func advance(by duration: Duration) { current.withLock { $0 += duration } }
}

public enum CircuitState: String, Sendable, Equatable {
    case closed
    case open
    case halfOpen = "half_open"

    /// The value of the state gauge: 0 closed, 1 half-open, 2 open.
    var gaugeValue: Int {
        switch self {
        case .closed: 0
        case .halfOpen: 1
        case .open: 2
        }
    }
}

/// What a health endpoint shows for a breaker.
public struct BreakerHealth: Sendable, Equatable {
    /// `ok` while closed, `degraded` otherwise.
    public var status: String
    public var state: CircuitState
    public var reason: String?

    public init(status: String, state: CircuitState, reason: String?) {
        self.status = status
        self.state = state
        self.reason = reason
    }
}

/// A circuit breaker (SPEC-reliability §4): after `failureThreshold` consecutive failures it opens and refuses
/// calls at once (`circuit_open`, retriable) without touching the dependency; after `cooldown` it lets probe
/// calls through (half-open); `successThreshold` consecutive successes close it, any failure re-opens it.
///
/// State changes are counted in swift-metrics (`prodready_circuit_breaker_transitions_total{breaker,to}`,
/// gauge `prodready_circuit_breaker_state{breaker}`, `prodready_circuit_breaker_rejected_total{breaker}`)
/// and reported to `onTransition`.
public final class CircuitBreaker: Sendable {
    public struct Options: Sendable {
        public var failureThreshold: Int
        public var successThreshold: Int
        public var cooldown: Duration
        /// Probe calls allowed in flight at once while half-open; more are refused like when open.
        public var halfOpenMaxInFlight: Int
        /// Whether an error counts against the dependency. By default every error does except cancellation.
        public var isFailure: @Sendable (any Error) -> Bool

        public init(
            failureThreshold: Int = 5,
            successThreshold: Int = 3,
            cooldown: Duration = .seconds(30),
            halfOpenMaxInFlight: Int = 1,
            isFailure: @escaping @Sendable (any Error) -> Bool = { !($0 is CancellationError) }
        ) {
            self.failureThreshold = failureThreshold
            self.successThreshold = successThreshold
            self.cooldown = cooldown
            self.halfOpenMaxInFlight = halfOpenMaxInFlight
            self.isFailure = isFailure
        }
    }

    private struct Machine {
        var state: CircuitState = .closed
        var consecutiveFailures = 0
        var consecutiveSuccesses = 0
        var openedAt: Duration = .zero
        var probesInFlight = 0
        var lastFailure: String?
    }

    public let name: String
    public let options: Options
    private let clock: any MonotonicClock
    private let machine = Mutex(Machine())
    private let onTransition: (@Sendable (_ from: CircuitState, _ to: CircuitState) -> Void)?
    private let stateGauge: Gauge
    private let rejections: Counter
    private let metricsFactory: any MetricsFactory

    public init(
        name: String,
        options: Options = Options(),
        clock: any MonotonicClock = SystemMonotonicClock(),
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        onTransition: (@Sendable (_ from: CircuitState, _ to: CircuitState) -> Void)? = nil
    ) throws {
        guard options.failureThreshold >= 1, options.successThreshold >= 1, options.halfOpenMaxInFlight >= 1 else {
            throw ProdReadyError(.invalidArgument, "breaker thresholds must be at least 1 (failures \(options.failureThreshold), successes \(options.successThreshold), half-open in flight \(options.halfOpenMaxInFlight))")
        }
        guard options.cooldown > .zero else { throw ProdReadyError(.invalidArgument, "breaker cooldown must be positive") }
        self.name = name
        self.options = options
        self.clock = clock
        self.onTransition = onTransition
        self.metricsFactory = metricsFactory
        stateGauge = Gauge(label: "prodready_circuit_breaker_state", dimensions: [("breaker", name)], factory: metricsFactory)
        rejections = Counter(label: "prodready_circuit_breaker_rejected_total", dimensions: [("breaker", name)], factory: metricsFactory)
        stateGauge.record(CircuitState.closed.gaugeValue)
    }

    /// The current state. An open breaker whose cooldown has passed reports `halfOpen`.
    public var state: CircuitState {
        machine.withLock { machine in
            if machine.state == .open, clock.now() - machine.openedAt >= options.cooldown { return .halfOpen }
            return machine.state
        }
    }

    public var health: BreakerHealth {
        let (state, lastFailure, failures) = machine.withLock { ($0.state, $0.lastFailure, $0.consecutiveFailures) }
        switch state {
        case .closed: return BreakerHealth(status: "ok", state: .closed, reason: nil)
        case .open:
            return BreakerHealth(status: "degraded", state: .open, reason: "\(name) circuit open after \(failures) consecutive failures; last: \(lastFailure ?? "unknown")")
        case .halfOpen:
            return BreakerHealth(status: "degraded", state: .halfOpen, reason: "\(name) circuit half-open: probing after \(lastFailure ?? "failures")")
        }
    }

    /// Runs `operation` through the breaker: refused at once while open, counted otherwise.
    public func call<Result>(_ operation: () async throws -> Result) async throws -> Result {
        let isProbe = try admit()
        do {
            let result = try await operation()
            record(success: true, probe: isProbe, error: nil)
            return result
        } catch {
            if options.isFailure(error) {
                record(success: false, probe: isProbe, error: error)
            } else if isProbe {
                machine.withLock { $0.probesInFlight -= 1 }
            }
            throw error
        }
    }

    /// Decides whether a call may go ahead; true when it is a half-open probe.
    private func admit() throws -> Bool {
        var transition: (CircuitState, CircuitState)?
        let verdict: Result<Bool, ProdReadyError> = machine.withLock { machine in
            let now = clock.now()
            if machine.state == .open {
                let elapsed = now - machine.openedAt
                guard elapsed >= options.cooldown else {
                    return .failure(ProdReadyError(
                        .circuitOpen,
                        "\(name) circuit is open (\(machine.consecutiveFailures) consecutive failures, last: \(machine.lastFailure ?? "unknown")); retry in \(options.cooldown - elapsed)",
                        retriable: true
                    ))
                }
                machine.state = .halfOpen
                machine.consecutiveSuccesses = 0
                machine.probesInFlight = 0
                transition = (.open, .halfOpen)
            }
            if machine.state == .halfOpen {
                guard machine.probesInFlight < options.halfOpenMaxInFlight else {
                    return .failure(ProdReadyError(.circuitOpen, "\(name) circuit is half-open and already probing; retry shortly", retriable: true))
                }
                machine.probesInFlight += 1
                return .success(true)
            }
            return .success(false)
        }
        if let transition { announce(from: transition.0, to: transition.1) }
        switch verdict {
        case .success(let isProbe): return isProbe
        case .failure(let error):
            rejections.increment()
            throw error
        }
    }

    private func record(success: Bool, probe: Bool, error: (any Error)?) {
        let transition: (CircuitState, CircuitState)? = machine.withLock { machine in
            if probe { machine.probesInFlight -= 1 }
            if success {
                machine.consecutiveFailures = 0
                guard machine.state == .halfOpen else { return nil }
                machine.consecutiveSuccesses += 1
                guard machine.consecutiveSuccesses >= options.successThreshold else { return nil }
                machine.state = .closed
                machine.consecutiveSuccesses = 0
                machine.lastFailure = nil
                return (.halfOpen, .closed)
            }
            machine.consecutiveFailures += 1
            machine.consecutiveSuccesses = 0
            machine.lastFailure = error.map { "\($0)" }.map { String($0.prefix(300)) }
            switch machine.state {
            case .halfOpen:
                machine.state = .open
                machine.openedAt = clock.now()
                return (.halfOpen, .open)
            case .closed where machine.consecutiveFailures >= options.failureThreshold:
                machine.state = .open
                machine.openedAt = clock.now()
                return (.closed, .open)
            default:
                return nil
            }
        }
        if let transition { announce(from: transition.0, to: transition.1) }
    }

    private func announce(from: CircuitState, to: CircuitState) {
        stateGauge.record(to.gaugeValue)
        Counter(label: "prodready_circuit_breaker_transitions_total", dimensions: [("breaker", name), ("to", to.rawValue)], factory: metricsFactory).increment()
        onTransition?(from, to)
    }
}
