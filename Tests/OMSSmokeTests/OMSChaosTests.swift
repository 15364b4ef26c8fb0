import Foundation
import Testing
import OMSChaos
import ProdReadyPerformance
import TestSupport

/// SPEC-oms items 3, 4 and 6 on private deployments: each fault with commands flowing before, during and after it,
/// every acknowledged command converging, counted.
@Suite("OMS chaos: dependencies down, processes killed, crashed at a point and paused, out-of-order commands, a seeded soak; every acknowledged command converges, counted",
       .serialized)
struct OMSChaosTests {
    @Test("chaos-lite scenario", .requiresEmbedded(.postgres, .kafka, .redis, .s3), .ownDeployment("OMS_BASE_URL", because: "stops its dependencies and kills its processes"),
          arguments: OMSChaosScenario.allCases)
    func chaosLite(_ scenario: OMSChaosScenario) async throws {
        try await withOMSChaosTarget(label: scenario.rawValue, replicas: scenario.replicas) { target in
            let outcome = try await scenario.run(on: target)
            expectNoLoss(outcome.report, "chaos-lite \(scenario.rawValue)")
            #expect(outcome.summary.violations.isEmpty, "\(scenario.rawValue): \(outcome.summary.violations.joined(separator: "; "))")
            // SPEC-oms's goal for a dependency that returns: everything converged within 10 s (the seed allows
            // 240 s). It holds because this suite runs alone (scripts/test); beside the other suites, the chaos
            // stack at nice 19 got too little CPU to measure the OMS (Kafka down 10–25 s, 3 s idle).
            if case .stopComponent(let component) = scenario.fault.action {
                let validator = PerformanceValidator()
                var convergence = await validator.newMeasurement(
                    "OMS convergence after \(component.rawValue) returns (chaos-lite \(scenario.rawValue))",
                    thresholds: [.latency(percentile: 100, atMost: OMSChaosScenario.convergenceGoal)])
                if let after = outcome.report.convergedAfter { convergence.record(latency: after) }
                let verdict = await validator.add(convergence)
                let withinGoal = verdict.passed
                #expect(withinGoal, "\(verdict.report)")
            }
        }
    }

    @Test("the soak's schedule cannot run out before its time (no fault is shorter than its 2 s hold), and a longer soak keeps a seed's first faults")
    func soakScheduleCoversItsTime() {
        let minute = OMSSoak.schedule(seconds: 60, seed: 123)
        let tenMinutes = OMSSoak.schedule(seconds: 600, seed: 123)
        #expect(minute.faults.count >= 30, "\(minute.faults.count) faults for 60 s")
        #expect(tenMinutes.faults.count >= 300, "\(tenMinutes.faults.count) faults for 600 s")
        #expect(tenMinutes.faults.prefix(minute.faults.count).map(\.description) == minute.faults.map(\.description))
    }

    @Test("out of order: with the publisher stopped, v2 injected first is done, v1 after it is skipped_stale, and the instance and its document show v2",
          .requiresEmbedded(.postgres, .kafka, .redis, .s3), .ownDeployment("OMS_BASE_URL", because: "stops its publisher"))
    func outOfOrder() async throws {
        try await withOMSChaosTarget(label: "out-of-order") { target in
            let outcome = try await OMSOutOfOrder.run(on: target)
            expectNoLoss(outcome.report, "out-of-order")
            #expect(outcome.summary.violations.isEmpty, "\(outcome.summary.violations.joined(separator: "; "))")
        }
    }

    @Test("soak: seeded faults of every kind, each held 2 s, creates flowing throughout; after each fault everything acknowledged converges (PRODREADY_SOAK_SECONDS, default 60; PRODREADY_SEED replays)",
          .requiresEmbedded(.postgres, .kafka, .redis, .s3), .ownDeployment("OMS_BASE_URL", because: "stops its dependencies and kills its processes"))
    func soak() async throws {
        let environment = ProcessInfo.processInfo.environment
        let seconds = environment["PRODREADY_SOAK_SECONDS"].flatMap(Int.init) ?? 60
        // The printed seed is the schedule's own, so both lines name the same value to replay with (a value drawn
        // from it used to be printed second, under the same "replay with" hint).
        let seed = SeededRandom.fromEnvironment(label: "oms soak").seed
        try await withOMSChaosTarget(label: "soak") { target in
            let outcomes = try await OMSSoak.run(on: target, seconds: seconds, seed: seed)
            #expect(outcomes.count >= 2, "a soak of \(seconds) s ran \(outcomes.count - 1) faults")
            for outcome in outcomes {
                expectNoLoss(outcome.report, "soak: \(outcome.summary.scenario) (\(outcome.summary.fault))")
            }
            // The times to converge per kind of fault, with percentiles: figures, not limits (a short soak holds
            // a few faults of each kind; the chaos-lite scenarios check the 10 s goal).
            let validator = PerformanceValidator()
            let byKind = Dictionary(grouping: outcomes.filter { $0.summary.scenario.hasPrefix("soak fault") }) { $0.summary.fault.components(separatedBy: ", held").first ?? $0.summary.fault }
            for (kind, faults) in byKind.sorted(by: { $0.key < $1.key }) {
                var convergence = await validator.newMeasurement("soak convergence: \(kind)", thresholds: [])
                for fault in faults { if let after = fault.report.convergedAfter { convergence.record(latency: after) } }
                await validator.add(convergence)
            }
        }
    }
}
