import Synchronization

/// What a client knows about one operation it sent, which decides what its effect may look like.
public enum OperationFate: String, Sendable, Codable, CaseIterable {
    /// The service acknowledged it: its effect must arrive (exactly once where the design promises that).
    case acknowledged
    /// The client cannot tell (a timeout, a dropped connection): its effect may arrive once or not at all.
    case indeterminate
    /// The service refused it for certain (a 4xx, a conflict): its effect must never arrive.
    case refused
}

/// Records every operation a test or a load generator sent, keyed by the id its effect will carry. Safe to
/// share between the tasks that send operations.
public final class OperationLedger: Sendable {
    private let fates = Mutex<[String: OperationFate]>([:])

    public init() {}

    /// Records `id`'s fate. A later, more certain answer for the same id wins (acknowledged over indeterminate),
    /// so a retry that finally got its acknowledgement counts as acknowledged.
    public func record(_ id: String, _ fate: OperationFate) {
        fates.withLock { table in
            switch (table[id], fate) {
            case (.acknowledged?, _): break
            case (.refused?, .indeterminate): break
            default: table[id] = fate
            }
        }
    }

    public func acknowledged(_ id: String) { record(id, .acknowledged) }
    public func indeterminate(_ id: String) { record(id, .indeterminate) }
    public func refused(_ id: String) { record(id, .refused) }

    /// Every id recorded so far with its fate.
    public var snapshot: [String: OperationFate] { fates.withLock { $0 } }

    public func count(_ fate: OperationFate) -> Int { fates.withLock { $0.values.count { $0 == fate } } }
}

/// The outcome of comparing what was sent with what arrived: Jepsen's total-queue sets, with ids.
public struct LossReport: Sendable, Equatable, CustomStringConvertible {
    /// How many operations were acknowledged, indeterminate and refused.
    public var acknowledged: Int
    public var indeterminate: Int
    public var refused: Int
    /// How many effects were observed, repeats included.
    public var observedEffects: Int
    /// Acknowledged operations whose effect never arrived.
    public var lost: [String]
    /// Effects that arrived more than once, with how often, where the design promises exactly once.
    public var duplicated: [String: Int]
    /// Effects of operations never sent, or refused.
    public var unexpected: [String]
    /// Indeterminate operations whose effect did arrive (allowed; reported so a reader sees them).
    public var indeterminateApplied: Int
    /// From the reference instant to the first check that found nothing lost; nil if that never happened.
    public var convergedAfter: Duration?
    /// How many times the effects were read, and why the last read failed if it did.
    public var checks: Int
    public var lastObservationError: String?

    public init(
        acknowledged: Int, indeterminate: Int, refused: Int, observedEffects: Int, lost: [String],
        duplicated: [String: Int], unexpected: [String], indeterminateApplied: Int,
        convergedAfter: Duration? = nil, checks: Int = 1, lastObservationError: String? = nil
    ) {
        self.acknowledged = acknowledged
        self.indeterminate = indeterminate
        self.refused = refused
        self.observedEffects = observedEffects
        self.lost = lost
        self.duplicated = duplicated
        self.unexpected = unexpected
        self.indeterminateApplied = indeterminateApplied
        self.convergedAfter = convergedAfter
        self.checks = checks
        self.lastObservationError = lastObservationError
    }

    /// Nothing lost, doubled or unexpected.
    public var isClean: Bool { lost.isEmpty && duplicated.isEmpty && unexpected.isEmpty }
    /// Clean and converged: what every convergence check asks for.
    public var passed: Bool { isClean && convergedAfter != nil }

    public var description: String {
        var text = convergedAfter.map { "converged after \(LossReport.seconds($0))" } ?? "NOT converged after \(checks) checks"
        text += ": \(acknowledged) acknowledged, \(indeterminate) indeterminate (\(indeterminateApplied) applied), \(refused) refused, \(observedEffects) effects observed"
        text += "; lost \(lost.count)" + LossReport.list(lost)
        text += ", duplicated \(duplicated.count)" + LossReport.list(duplicated.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" })
        text += ", unexpected \(unexpected.count)" + LossReport.list(unexpected)
        if let lastObservationError { text += "; last read failed: \(lastObservationError)" }
        return text
    }

    /// The first ids of a set, enough to start looking, and how many more there are.
    static func list(_ ids: [String], limit: Int = 20) -> String {
        guard !ids.isEmpty else { return "" }
        let shown = ids.prefix(limit).joined(separator: ", ")
        return ids.count > limit ? " [\(shown), +\(ids.count - limit) more]" : " [\(shown)]"
    }

    static func seconds(_ duration: Duration) -> String {
        let milliseconds = Double(duration.components.seconds) * 1_000 + Double(duration.components.attoseconds) / 1e15
        return milliseconds < 1_000 ? "\(Int(milliseconds.rounded())) ms" : "\((milliseconds / 10).rounded() / 100) s"
    }
}

/// Compares operations with their observed effects.
public enum LossAccounting {
    /// Accounts `observed` effect ids (one entry per effect, so a repeat appears twice) against `fates`.
    /// With `exactlyOnce` false (an at-least-once effect, such as a delivery), repeats are not duplicates.
    public static func account(fates: [String: OperationFate], observed: [String], exactlyOnce: Bool = true) -> LossReport {
        var seen: [String: Int] = [:]
        for id in observed { seen[id, default: 0] += 1 }
        var lost: [String] = []
        var acknowledged = 0, indeterminate = 0, refused = 0, indeterminateApplied = 0
        for (id, fate) in fates {
            switch fate {
            case .acknowledged:
                acknowledged += 1
                if seen[id] == nil { lost.append(id) }
            case .indeterminate:
                indeterminate += 1
                if seen[id] != nil { indeterminateApplied += 1 }
            case .refused:
                refused += 1
            }
        }
        let unexpected = seen.keys.filter { fates[$0] == nil || fates[$0] == .refused }
        let duplicated = exactlyOnce ? seen.filter { $0.value > 1 && fates[$0.key] != nil && fates[$0.key] != .refused } : [:]
        return LossReport(
            acknowledged: acknowledged, indeterminate: indeterminate, refused: refused, observedEffects: observed.count,
            lost: lost.sorted(), duplicated: duplicated,
            unexpected: unexpected.sorted(), indeterminateApplied: indeterminateApplied
        )
    }

    /// Reads the effects with `observe` until no acknowledged operation is lost, or until `timeout` has passed,
    /// and accounts the last read. `convergedAfter` counts from `since` (say, the moment a fault ended), or from
    /// the call. A read that throws counts as a check that found nothing new; its error is kept for the report.
    /// Duplicates and unexpected effects do not end the wait: a late effect could still be missing.
    public static func converge(
        fates: @Sendable () -> [String: OperationFate],
        exactlyOnce: Bool = true,
        since: ContinuousClock.Instant? = nil,
        timeout: Duration,
        interval: Duration = .milliseconds(100),
        observe: @Sendable () async throws -> [String]
    ) async throws -> LossReport {
        let clock = ContinuousClock()
        let start = since ?? clock.now
        let deadline = clock.now + timeout
        var checks = 0
        var lastObserved: [String] = []
        var lastError: String?
        while true {
            checks += 1
            do {
                lastObserved = try await observe()
                lastError = nil
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                lastError = "\(error)"
            }
            var report = account(fates: fates(), observed: lastObserved, exactlyOnce: exactlyOnce)
            report.checks = checks
            report.lastObservationError = lastError
            if lastError == nil && report.lost.isEmpty {
                report.convergedAfter = clock.now - start
                return report
            }
            if clock.now >= deadline { return report }
            try await Task.sleep(for: interval)
        }
    }

    /// `converge` over everything a ledger recorded.
    public static func converge(
        _ ledger: OperationLedger,
        exactlyOnce: Bool = true,
        since: ContinuousClock.Instant? = nil,
        timeout: Duration,
        interval: Duration = .milliseconds(100),
        observe: @Sendable () async throws -> [String]
    ) async throws -> LossReport {
        try await converge(
            fates: { ledger.snapshot }, exactlyOnce: exactlyOnce, since: since, timeout: timeout, interval: interval, observe: observe)
    }
}
