import Foundation
import Testing
import ProdReadyCore
import TestSupport

@Suite("TestSupport logic")
struct TestSupportLogicTests {
    @Test("eventually returns as soon as the condition holds")
    func eventuallySucceeds() async throws {
        let counter = Counter()
        let value: Int = try await eventually("counter to reach 3", timeout: .seconds(5), interval: .milliseconds(1)) {
            let current = await counter.increment()
            return current >= 3 ? .done(current) : .pending("counter at \(current)")
        }
        #expect(value == 3)
    }

    @Test("eventually fails after its deadline, naming what was still missing")
    func eventuallyTimesOut() async {
        let error = await #expect(throws: ProdReadyError.self) {
            let _: Int = try await eventually("rows to arrive", timeout: .milliseconds(100), interval: .milliseconds(10)) {
                .pending("2 of 5 rows")
            }
        }
        #expect(error?.code == .timeout)
        #expect(error?.message.contains("rows to arrive") == true)
        #expect(error?.message.contains("2 of 5 rows") == true)
    }

    @Test("A latency threshold fails when the percentile is over its limit, and the report shows value and limit")
    func latencyThreshold() async {
        let lines = Lines()
        let validator = PerformanceValidator(output: { line in Task { await lines.append(line) } })
        var slow = await validator.newMeasurement("claim", thresholds: [.latency(percentile: 99, atMost: .milliseconds(5))])
        for _ in 0..<98 { slow.record(latency: .milliseconds(1)) }
        for _ in 0..<2 { slow.record(latency: .milliseconds(20)) }
        #expect(!slow.passed)
        #expect(slow.report.contains("FAIL p99 <= 5.000 ms"))
        #expect(slow.report.contains("observed 20."))

        var fast = await validator.newMeasurement("claim-fast", thresholds: [.latency(percentile: 99, atMost: .milliseconds(5))])
        for _ in 0..<100 { fast.record(latency: .milliseconds(1)) }
        #expect(fast.passed)
        await validator.add(slow)
        await validator.add(fast)
        let failed = await validator.summarize()
        #expect(failed.count == 1)
        #expect(failed.first?.contains("claim:") == true)
    }

    @Test("A throughput threshold compares operations per second over the elapsed time")
    func throughputThreshold() async {
        let validator = PerformanceValidator(output: { _ in })
        var measurement = await validator.newMeasurement("events", thresholds: [.throughput(atLeast: 4000)])
        measurement.record(operations: 3000)
        measurement.elapsed = .seconds(1)
        #expect(!measurement.passed)
        measurement.record(operations: 2000)
        #expect(measurement.passed)
        #expect(measurement.throughput == 5000)
    }

    @Test("A seeded random source replays the same sequence for the same seed")
    func seededRandom() {
        var first = SeededRandom(seed: 42)
        var second = SeededRandom(seed: 42)
        var other = SeededRandom(seed: 43)
        let a = (0..<10).map { _ in first.next() }
        let b = (0..<10).map { _ in second.next() }
        let c = (0..<10).map { _ in other.next() }
        #expect(a == b)
        #expect(a != c)
        #expect(SeededRandom.fromEnvironment(label: "unit", environment: ["PRODREADY_SEED": "7"]).seed == 7)
    }

    @Test("Unique names are valid across Postgres, Kafka, JetStream, Redis and S3 and do not repeat")
    func uniqueNames() {
        let names = (0..<1000).map { _ in uniqueName("t") }
        #expect(Set(names).count == 1000)
        #expect(names.allSatisfy { name in (3...63).contains(name.count) && name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "-" } })
    }
}

actor Counter {
    var value = 0
    func increment() -> Int {
        value += 1
        return value
    }
}

actor Lines {
    var all: [String] = []
    func append(_ line: String) { all.append(line) }
}

@Suite("Which tests run against an external deployment")
struct ExternalDeploymentGateTests {
    let stores = ["POSTGRES_URL", "S3_ENDPOINT_URL|MINIO_ENDPOINT_URL", "REDIS_URL"]
    let external = ["OMS_BASE_URL": "http://oms", "POSTGRES_URL": "postgresql://x", "MINIO_ENDPOINT_URL": "http://s3", "REDIS_URL": "redis://r", "PRODREADY_ALLOW_DESTRUCTIVE": "1"]

    @Test("without the deployment variable every test runs on its own deployment")
    func ownDeployment() {
        for use in [ControllableDeploymentTrait.ExternalUse.never, .apiOnly, .readsStores(stores)] {
            #expect(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "x", use: use, environment: [:]) == nil)
            #expect(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "x", use: use, environment: ["OMS_BASE_URL": ""]) == nil)
        }
    }

    @Test("a test that controls processes never runs against an external deployment, even with the destructive opt-in")
    func controlling() throws {
        let unmet = try #require(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "sends SIGTERM to its processes", use: .never, environment: external))
        #expect(unmet.kind == .notControllable)
        #expect(unmet.reason.contains("sends SIGTERM to its processes"))
    }

    @Test("a test that writes through the API needs PRODREADY_ALLOW_DESTRUCTIVE=1 against an external deployment")
    func apiOnly() throws {
        #expect(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "x", use: .apiOnly, environment: external) == nil)
        var withoutOptIn = external
        withoutOptIn["PRODREADY_ALLOW_DESTRUCTIVE"] = nil
        let unmet = try #require(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "x", use: .apiOnly, environment: withoutOptIn))
        #expect(unmet.reason.hasSuffix("set PRODREADY_ALLOW_DESTRUCTIVE=1 to allow it"), "\(unmet.reason)")
    }

    @Test("a test that reads the stores runs when every store variable is set (either alternative), and names the missing ones otherwise")
    func readingStores() throws {
        #expect(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "reads", use: .readsStores(stores), environment: external) == nil)
        var missing = external
        missing["MINIO_ENDPOINT_URL"] = nil
        missing["REDIS_URL"] = ""
        let unmet = try #require(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "reads", use: .readsStores(stores), environment: missing))
        #expect(unmet.reason.hasSuffix("set S3_ENDPOINT_URL or MINIO_ENDPOINT_URL, REDIS_URL as well"), "\(unmet.reason)")
    }
}

@Suite("Chaos building blocks: schedules, load, reports")
struct ChaosLogicTests {
    @Test("a slow convergence shows the last notices, warnings and errors of a service's log, not its info lines or readiness probes")
    func logExcerpt() {
        let log = """
            2026-12-04T00:54:00+0000 info oms-publisher: [HummingbirdCore] Server started
            2026-12-04T00:54:00+0000 warning oms-publisher: method=GET path=/health/ready status=503 [ProdReadyService] request
            2026-12-04T00:54:09+0000 warning oms-publisher: error=server_error: Kafka delivery failed [OMSService] publish round failed; retrying
            2026-12-04T00:54:10+0000 error oms-publisher: S3 GET failed
            2026-12-04T00:54:11+0000 warning oms-publisher: error=connection_failed [OMSService] publish round failed; retrying
            2026-12-04T00:54:14+0000 notice oms-publisher: closed abandoned sequences
            """
        let excerpt = ServiceLogExcerpt.warnings(in: log, limit: 2)
        #expect(excerpt.count == 2)
        #expect(excerpt.first?.contains("connection_failed") == true && excerpt.last?.contains("closed abandoned sequences") == true, "\(excerpt)")
        #expect(ServiceLogExcerpt.warnings(in: log, limit: 10).count == 4, "the readiness probe's 503 and the info line are left out, the notice kept")
        // A retry loop's repeated warning is one line with its count, and does not push the other kinds out.
        let repeated = log + "\n" + (12...40).map { "2026-12-04T00:54:\($0)+0000 warning oms-publisher: error=connection_failed [OMSService] publish round failed; retrying" }.joined(separator: "\n")
        let collapsed = ServiceLogExcerpt.warnings(in: repeated, limit: 4)
        #expect(collapsed.count == 4, "\(collapsed)")
        #expect(collapsed.last?.hasSuffix("(×30)") == true && collapsed.last?.contains("00:54:40") == true, "\(collapsed)")
        #expect(collapsed.first?.contains("Kafka delivery failed") == true, "\(collapsed)")
    }

    let kinds: [Fault.Action] = [.stopComponent(.kafka), .stopComponent(.redis), .killProcess("oms-publisher"), .pauseProcess("oms-instance-worker")]

    @Test("a schedule is a function of its seed: the same seed draws the same faults, another seed others; never the same kind twice in a row")
    func scheduleReplays() {
        let first = FaultSchedule.draw(seed: 123, count: 40, from: kinds, hold: .seconds(2))
        #expect(first == FaultSchedule.draw(seed: 123, count: 40, from: kinds, hold: .seconds(2)))
        #expect(first.faults != FaultSchedule.draw(seed: 124, count: 40, from: kinds, hold: .seconds(2)).faults)
        #expect(first.faults.count == 40)
        #expect(zip(first.faults, first.faults.dropFirst()).allSatisfy { $0.action != $1.action })
        #expect(Set(first.faults.map(\.action)).count == kinds.count, "40 draws from 4 kinds use them all")
        #expect(first.faults.allSatisfy { $0.hold == .seconds(2) })
    }

    @Test("the printed schedule names the seed, how to replay it and every fault with its hold")
    func schedulePrints() {
        let text = FaultSchedule(seed: 7, faults: [Fault(.stopComponent(.kafka), hold: .seconds(2)), Fault(.crashPoint(process: "oms-instance-worker", point: "after_claim"), hold: .milliseconds(1500))]).description
        #expect(text == """
            fault schedule: seed 7 (replay with PRODREADY_SEED=7), 2 faults planned
              1. kafka down, held 2 s
              2. oms-instance-worker:after_claim crash, held 1.5 s
            """)
    }

    @Test("the load generator records every outcome in the ledger, keeps at most maxInFlight waiting, and counts acknowledgements in a window")
    func loadGenerator() async throws {
        let ledger = OperationLedger()
        let inFlight = InFlightCounter()
        let generator = LoadGenerator(ledger: ledger, rate: 200, maxInFlight: 3) { index in
            await inFlight.enter()
            try? await Task.sleep(for: .milliseconds(20))
            await inFlight.leave()
            switch index % 3 {
            case 0: return .acknowledged("op\(index)")
            case 1: return .refused("op\(index)")
            default: return .indeterminate("op\(index)")
            }
        }
        let began = ContinuousClock().now
        generator.start()
        // Not a speed test: the full run keeps both cores busy with private deployments, so the wait is generous.
        let sent = try await eventually("30 operations answered", timeout: .seconds(90), interval: .milliseconds(10)) {
            let count = ledger.snapshot.count
            return count >= 30 ? .done(count) : .pending("\(count) answered")
        }
        await generator.stop()
        let fates = ledger.snapshot
        #expect(sent >= 30)
        let most = await inFlight.most
        #expect(most <= 3, "at most 3 in flight, saw \(most)")
        #expect(fates.count == fates.keys.count)
        for (id, fate) in fates {
            let index = Int(id.dropFirst(2))!
            #expect(fate == [OperationFate.acknowledged, .refused, .indeterminate][index % 3], "\(id)")
        }
        #expect(generator.acknowledgedCount == fates.values.count { $0 == .acknowledged })
        #expect(generator.acknowledged(from: began, to: ContinuousClock().now) == generator.acknowledgedCount)
        #expect(generator.acknowledged(from: ContinuousClock().now, to: ContinuousClock().now + .seconds(1)) == 0)
    }

    @Test("a scenario summary is one line and, with PRODREADY_REPORT_DIR, one JSON line appended per scenario")
    func reportLines() throws {
        let directory = NSTemporaryDirectory() + "prodready-report-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var report = LossAccounting.account(fates: ["a": .acknowledged, "b": .acknowledged, "c": .refused], observed: ["a", "a", "c"])
        report.convergedAfter = nil
        let lossy = ScenarioSummary(suite: "oms", scenario: "chaos-lite kafka-down", fault: "kafka down, held 7 s", holdSeconds: 7, acknowledgedDuringFault: 1, report: report, violations: ["x"])
        #expect(!lossy.passed)
        #expect(lossy.line.hasPrefix("❌ oms chaos-lite kafka-down: kafka down, held 7 s; 1 acknowledged during it (2 in all, 1 refused, 0 indeterminate); did NOT converge; lost 1 [\"b\"], duplicated 1 [\"a\"], unexpected 1 [\"c\"]"), "\(lossy.line)")
        var clean = LossAccounting.account(fates: ["a": .acknowledged], observed: ["a"])
        clean.convergedAfter = .milliseconds(1500)
        let good = ScenarioSummary(suite: "oms", scenario: "soak", fault: "3 faults", holdSeconds: 2, seed: 9, acknowledgedDuringFault: 1, report: clean, violations: [])
        #expect(good.passed)
        #expect(good.line.contains("converged 1.50 s after; lost 0, duplicated 0, unexpected 0; seed 9"), "\(good.line)")
        let environment = [ScenarioReport.directoryVariable: directory]
        // Not printed: a "❌" line in a passing run's log would send a reader looking for a failure.
        let path = try #require(try ScenarioReport.record(lossy, environment: environment, echo: { _ in }))
        #expect(try ScenarioReport.record(good, environment: environment, echo: { _ in }) == path)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        #expect(try decoder.decode(ScenarioSummary.self, from: Data(lines[0].utf8)) == lossy)
        #expect(lines[1].contains("\"converged_after_seconds\":1.5"), "\(lines[1])")
        #expect(try ScenarioReport.record(good, environment: [:], echo: { _ in }) == nil, "no directory, no file")
    }
}

actor InFlightCounter {
    private var current = 0
    private(set) var most = 0
    func enter() { current += 1; most = max(most, current) }
    func leave() { current -= 1 }
}
