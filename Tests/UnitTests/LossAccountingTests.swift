import Testing
import Synchronization
import TestSupport

@Suite("Loss accounting: acknowledged operations against observed effects")
struct LossAccountingTests {
    @Test("each set names its ids: lost, duplicated, unexpected (never sent, or refused); indeterminate may arrive or not")
    func sets() {
        let fates: [String: OperationFate] = [
            "a": .acknowledged, "b": .acknowledged, "c": .acknowledged, "d": .acknowledged,
            "maybe-1": .indeterminate, "maybe-2": .indeterminate, "no": .refused,
        ]
        let report = LossAccounting.account(fates: fates, observed: ["a", "b", "b", "d", "maybe-1", "no", "ghost"])
        #expect(report.lost == ["c"])
        #expect(report.duplicated == ["b": 2])
        #expect(report.unexpected == ["ghost", "no"])
        #expect(report.acknowledged == 4 && report.indeterminate == 2 && report.refused == 1)
        #expect(report.indeterminateApplied == 1 && report.observedEffects == 7)
        #expect(!report.isClean)
        let text = report.description
        for fragment in ["lost 1 [c]", "duplicated 1 [b ×2]", "unexpected 2 [ghost, no]"] {
            #expect(text.contains(fragment), "\(text)")
        }
    }

    @Test("an indeterminate operation applied twice is a duplicate; at-least-once effects may repeat")
    func repeats() {
        let fates: [String: OperationFate] = ["a": .acknowledged, "m": .indeterminate]
        #expect(LossAccounting.account(fates: fates, observed: ["a", "m", "m"]).duplicated == ["m": 2])
        let atLeastOnce = LossAccounting.account(fates: fates, observed: ["a", "a", "m", "m"], exactlyOnce: false)
        #expect(atLeastOnce.isClean && atLeastOnce.duplicated.isEmpty)
    }

    @Test("long sets are cut to 20 ids with a count of the rest")
    func longLists() {
        let fates = Dictionary(uniqueKeysWithValues: (0..<25).map { (String(format: "op-%02d", $0), OperationFate.acknowledged) })
        let report = LossAccounting.account(fates: fates, observed: [])
        #expect(report.lost.count == 25)
        #expect(report.description.contains("op-19, +5 more]"), "\(report.description)")
        #expect(!report.description.contains("op-20"))
    }

    @Test("the ledger keeps the most certain answer: a retry's acknowledgement beats an earlier timeout, a timeout never hides a refusal")
    func ledger() {
        let ledger = OperationLedger()
        ledger.indeterminate("x")
        ledger.acknowledged("x")
        ledger.indeterminate("x")
        ledger.refused("y")
        ledger.indeterminate("y")
        ledger.indeterminate("z")
        #expect(ledger.snapshot == ["x": .acknowledged, "y": .refused, "z": .indeterminate])
        #expect(ledger.count(.acknowledged) == 1)
    }

    @Test("converge polls until nothing acknowledged is missing and reports the time from the reference instant")
    func converges() async throws {
        let ledger = OperationLedger()
        for id in ["1", "2", "3"] { ledger.acknowledged(id) }
        let arrived = Mutex<[String]>([])
        let reads = Mutex(0)
        let clock = ContinuousClock()
        let since = clock.now
        let report = try await LossAccounting.converge(ledger, since: since, timeout: .seconds(10), interval: .milliseconds(1)) {
            // One effect arrives per read, the first read fails as a dependency might.
            let read = reads.withLock { $0 += 1; return $0 }
            if read == 1 { throw LossTestError() }
            return arrived.withLock { effects in
                if effects.count < 3 { effects.append(String(effects.count + 1)) }
                return effects
            }
        }
        #expect(report.passed, "\(report)")
        #expect(report.checks == 4, "one failed read and three partial ones: \(report.checks)")
        let convergedAfter = try #require(report.convergedAfter)
        #expect(convergedAfter <= clock.now - since)
    }

    @Test("a check that never converges returns the lost ids and the last read's error, and fails the test that asked")
    func notConverged() async throws {
        let ledger = OperationLedger()
        ledger.acknowledged("kept")
        ledger.acknowledged("gone")
        let report = try await LossAccounting.converge(ledger, timeout: .milliseconds(30), interval: .milliseconds(5)) { ["kept"] }
        #expect(report.convergedAfter == nil && report.lost == ["gone"] && report.checks > 1)
        #expect(report.description.hasPrefix("NOT converged"), "\(report.description)")

        let failing = try await LossAccounting.converge(ledger, timeout: .milliseconds(20), interval: .milliseconds(5)) { throw LossTestError() }
        #expect(failing.lastObservationError == "the effects could not be read", "\(failing)")

        withKnownIssue("expectNoLoss must record an issue naming the lost id") {
            expectNoLoss(report, "deliberately lossy")
        } matching: { issue in
            issue.comments.contains { $0.rawValue.contains("lost 1 [gone]") } || "\(issue)".contains("lost 1 [gone]")
        }
        // A clean report that converged passes silently.
        expectNoLoss(LossAccounting.account(fates: ["a": .acknowledged], observed: ["a"]).converged(), "clean")
    }
}

private struct LossTestError: Error, CustomStringConvertible {
    var description: String { "the effects could not be read" }
}

extension LossReport {
    fileprivate func converged() -> LossReport {
        var copy = self
        copy.convergedAfter = .zero
        return copy
    }
}
