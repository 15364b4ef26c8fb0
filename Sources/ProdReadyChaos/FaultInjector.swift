import Foundation
public import ProdReadyCore
import ProdReadyInfra
import Synchronization

/// A timestamped line per thing a chaos run did (fault applied, healed, converged), printed as it happens and
/// kept for the report.
public final class ChaosLog: Sendable {
    private let lines = Mutex<[String]>([])
    private let echo: @Sendable (String) -> Void

    public init(echo: @escaping @Sendable (String) -> Void = { print($0) }) {
        self.echo = echo
    }

    public func note(_ text: String) {
        let line = "\(InternetTime.format(Date())) \(text)"
        lines.withLock { $0.append(line) }
        echo(line)
    }

    public var all: [String] { lines.withLock { $0 } }
}

/// When a fault began and ended, as the run saw it.
public struct FaultWindow: Sendable {
    public var fault: Fault
    public var began: ContinuousClock.Instant
    public var healed: ContinuousClock.Instant
}

/// Applies faults through a `ChaosControl` and heals them after their hold.
public struct FaultInjector: Sendable {
    public let control: any ChaosControl
    public let log: ChaosLog

    public init(control: any ChaosControl, log: ChaosLog) {
        self.control = control
        self.log = log
    }

    /// Applies `fault`, runs `during` (checks that must hold while it lasts) alongside the hold, then heals it.
    /// A crash point's hold starts when the process exited at the point, which must happen within
    /// `crashTimeout` (the load must reach the point) with status 42.
    @discardableResult
    public func inject(
        _ fault: Fault, crashTimeout: Duration = .seconds(60), during: (@Sendable (_ began: ContinuousClock.Instant) async throws -> Void)? = nil
    ) async throws -> FaultWindow {
        do {
            return try await applyAndHeal(fault, crashTimeout: crashTimeout, during: during)
        } catch {
            // Whatever failed, the deployment is left whole for the next scenario or the cleanup.
            log.note("fault \(fault.name) failed (\(error)); healing")
            try? await heal(fault)
            throw error
        }
    }

    private func applyAndHeal(
        _ fault: Fault, crashTimeout: Duration, during: (@Sendable (_ began: ContinuousClock.Instant) async throws -> Void)?
    ) async throws -> FaultWindow {
        let clock = ContinuousClock()
        log.note("fault: \(fault.name) for \(Fault.seconds(fault.hold)) s")
        switch fault.action {
        case .stopComponent(let component): try await control.stop(component)
        case .killComponent(let component): try await control.kill(component)
        case .pauseComponent(let component): try await control.pause(component)
        case .killProcess(let name): try await control.killProcess(name)
        case .pauseProcess(let name): try await control.pauseProcess(name)
        case .restartProcess(let name): try await control.stopProcess(name)
        case .crashPoint(let name, let point):
            try await control.stopProcess(name)
            try await control.startProcess(name, environment: ["PRODREADY_CHAOS": "1", "CHAOS_CRASH_POINT": "\(name):\(point)"], awaitReady: false)
            guard let status = try await control.exitStatus(of: name, within: crashTimeout) else {
                throw ProdReadyError(.timeout, "\(name) armed with \(point) did not reach it within \(crashTimeout)")
            }
            guard status == 42 else {
                throw ProdReadyError(.processFailed, "\(name) armed with \(point) exited with status \(status), not the crash point's 42")
            }
            log.note("\(name) exited at \(point) with status 42")
        }
        // The fault is in effect from here: a component that took a while to stop was still serving until now.
        let began = clock.now
        let holdEnds = began + fault.hold
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let during { group.addTask { [began] in try await during(began) } }
            group.addTask { try await clock.sleep(until: holdEnds) }
            try await group.waitForAll()
        }
        try await heal(fault)
        let healed = clock.now
        log.note("healed: \(fault.name) after \(Self.milliseconds(healed - began)) ms")
        return FaultWindow(fault: fault, began: began, healed: healed)
    }

    /// Undoes `fault` (also used to clean up after a run that failed halfway; undoing what is not broken is a
    /// no-op for every action).
    public func heal(_ fault: Fault) async throws {
        switch fault.action {
        case .stopComponent(let component), .killComponent(let component): try await control.start(component)
        case .pauseComponent(let component): try await control.resume(component)
        case .killProcess(let name), .restartProcess(let name), .crashPoint(let name, _):
            try await control.startProcess(name, environment: [:], awaitReady: true)
        case .pauseProcess(let name): try await control.resumeProcess(name)
        }
    }

    static func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}

/// Broken rules a scenario found, collected from the tasks that check them.
public final class Findings: Sendable {
    private let items = Mutex<[String]>([])
    public init() {}
    public func add(_ finding: String) { items.withLock { $0.append(finding) } }
    public func add(contentsOf findings: [String]) { items.withLock { $0.append(contentsOf: findings) } }
    public var all: [String] { items.withLock { $0 } }
}
