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

    @Test("without the deployment variable every test runs on its own deployment")
    func ownDeployment() {
        #expect(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "x", enoughWith: [], environment: [:]) == nil)
        #expect(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "x", enoughWith: stores, environment: ["OMS_BASE_URL": ""]) == nil)
    }

    @Test("a test that controls processes never runs against an external deployment")
    func controlling() throws {
        let unmet = try #require(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "sends SIGTERM to its processes", enoughWith: [], environment: ["OMS_BASE_URL": "http://oms", "POSTGRES_URL": "postgresql://x"]))
        #expect(unmet.kind == .notControllable)
        #expect(unmet.reason.contains("sends SIGTERM to its processes"))
    }

    @Test("a test that reads the stores runs when every store variable is set (either alternative), and names the missing ones otherwise")
    func readingStores() throws {
        let external = ["OMS_BASE_URL": "http://oms", "POSTGRES_URL": "postgresql://x", "MINIO_ENDPOINT_URL": "http://s3", "REDIS_URL": "redis://r"]
        #expect(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "reads", enoughWith: stores, environment: external) == nil)
        var missing = external
        missing["MINIO_ENDPOINT_URL"] = nil
        missing["REDIS_URL"] = ""
        let unmet = try #require(ControllableDeploymentTrait.unmet(variable: "OMS_BASE_URL", why: "reads", enoughWith: stores, environment: missing))
        #expect(unmet.reason.hasSuffix("set S3_ENDPOINT_URL or MINIO_ENDPOINT_URL, REDIS_URL as well"), "\(unmet.reason)")
    }
}
