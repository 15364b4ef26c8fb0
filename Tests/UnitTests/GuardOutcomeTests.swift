import Testing
import ProdReadyCore
import ProdReadyInfra
import TestSupport

/// Every kind of reason a guard can find, decided with and without strict mode. No server is needed: each case
/// is built from variables that point nowhere (a loopback port nothing listens on) or a home with no binaries.
@Suite("Guard outcomes")
struct GuardOutcomeTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var kind: UnmetRequirement.Kind
        var environment: [String: String]
        var requirement: InfrastructureRequirement
        /// Words the reason must contain, so that the reader learns what to fix.
        var mentions: String
        var testDescription: String { kind.rawValue }
    }

    static let closedPort = (try? LoopbackPort.free()) ?? 1

    static let cases: [Case] = [
        Case(kind: .missing, environment: ["PRODREADY_INFRA": "external"],
             requirement: InfrastructureRequirement(components: [.postgres]), mentions: "POSTGRES_URL"),
        Case(kind: .unreachable, environment: ["PRODREADY_INFRA": "external", "REDIS_URL": "redis://127.0.0.1:\(closedPort)"],
             requirement: InfrastructureRequirement(components: [.redis]), mentions: "127.0.0.1:\(closedPort)"),
        Case(kind: .configuration, environment: ["PRODREADY_INFRA": "external", "MINIO_ENDPOINT_URL": "http://127.0.0.1:\(closedPort)"],
             requirement: InfrastructureRequirement(components: [.s3]), mentions: "S3_ACCESS_KEY and S3_SECRET_KEY"),
        Case(kind: .configuration, environment: ["PRODREADY_INFRA": "kubernetes"],
             requirement: InfrastructureRequirement(components: [.redis]), mentions: "auto|native|compose|external"),
        Case(kind: .notControllable, environment: ["PRODREADY_INFRA": "external", "REDIS_URL": "redis://127.0.0.1:\(closedPort)", "PRODREADY_ALLOW_DESTRUCTIVE": "1"],
             requirement: InfrastructureRequirement(components: [.redis], operations: [.kill]), mentions: "cannot kill"),
        Case(kind: .cannotStart, environment: ["PRODREADY_HOME": "/nonexistent/prodready-home-\(closedPort)"],
             requirement: InfrastructureRequirement(components: [], embedded: [.kafka]), mentions: "bootstrap"),
    ]

    @Test("outside strict mode every kind of unmet requirement is a skip that says why", arguments: cases)
    func skipsLocally(_ example: Case) async throws {
        let infrastructure = TestInfrastructure(environment: example.environment)
        #expect(!infrastructure.isStrict)
        let unmet = try #require(await InfrastructureTrait.unmet(example.requirement, infrastructure: infrastructure))
        #expect(unmet.kind == example.kind, "reason: \(unmet.reason)")
        #expect(unmet.reason.contains(example.mentions), "reason: \(unmet.reason)")
        let decision = await InfrastructureTrait(requirement: example.requirement, infrastructure: infrastructure).decision()
        guard case .skip(let reason) = decision else {
            Issue.record("expected a skip, got \(decision)")
            return
        }
        #expect(reason.contains(example.kind.rawValue) && reason.contains(example.mentions), "skip reason: \(reason)")
    }

    @Test("in strict mode every kind of unmet requirement fails the test, with CI=true or PRODREADY_REQUIRE_INFRA=1",
          arguments: cases, [["CI": "true"], ["PRODREADY_REQUIRE_INFRA": "1"]])
    func failsInStrictMode(_ example: Case, strictness: [String: String]) async throws {
        let infrastructure = TestInfrastructure(environment: example.environment.merging(strictness) { $1 })
        #expect(infrastructure.isStrict, "a bad variable elsewhere must not turn strict mode off")
        let decision = await InfrastructureTrait(requirement: example.requirement, infrastructure: infrastructure).decision()
        guard case .fail(let reason) = decision else {
            Issue.record("strict mode must fail, got \(decision)")
            return
        }
        #expect(reason.contains(example.kind.rawValue) && reason.contains(example.mentions), "failure reason: \(reason)")
    }

    @Test(
        "in strict mode the guard records the failure and the test's body never runs: a missing component, an incomplete S3 configuration",
        arguments: [(Component.postgres, [String: String]()), (Component.s3, ["MINIO_ENDPOINT_URL": "http://127.0.0.1:\(Self.closedPort)"])]
    )
    func strictGuardRecordsAnIssue(component: Component, variables: [String: String]) async throws {
        let infrastructure = TestInfrastructure(environment: variables.merging(["CI": "true", "PRODREADY_INFRA": "external"]) { $1 })
        let trait = InfrastructureTrait(requirement: InfrastructureRequirement(components: [component]), infrastructure: infrastructure)
        let ran = RanFlag()
        let test = try #require(Test.current)
        await withKnownIssue("the guard must record a failure in strict mode") {
            try await trait.provideScope(for: test, testCase: Test.Case.current) { await ran.set() }
        }
        #expect(await ran.value == false)
    }

    @Test("a partial S3 configuration leaves a test that needs only Postgres decided by Postgres alone", arguments: [false, true])
    func otherComponentsUnaffected(strict: Bool) async throws {
        var base = ["PRODREADY_INFRA": "external", "POSTGRES_URL": "postgresql://nobody:x@127.0.0.1:\(Self.closedPort)/none"]
        if strict { base["CI"] = "true" }
        let withBrokenS3 = base.merging(["MINIO_ENDPOINT_URL": "http://127.0.0.1:\(Self.closedPort)", "S3_ACCESS_KEY": "only-one"]) { $1 }
        let postgresOnly = InfrastructureRequirement(components: [.postgres])
        let clean = try #require(await InfrastructureTrait.unmet(postgresOnly, infrastructure: TestInfrastructure(environment: base)))
        let broken = try #require(await InfrastructureTrait.unmet(postgresOnly, infrastructure: TestInfrastructure(environment: withBrokenS3)))
        #expect(clean.kind == .unreachable)
        #expect(broken.kind == .unreachable, "the S3 variables decided a Postgres-only test: \(broken)")
        #expect(!broken.reason.contains("S3"), "reason: \(broken.reason)")
        // The S3 problem is reported, with its fix, where S3 is needed.
        let s3Test = try #require(await InfrastructureTrait.unmet(InfrastructureRequirement(components: [.postgres, .s3]), infrastructure: TestInfrastructure(environment: withBrokenS3)))
        #expect(s3Test.kind == .configuration)
        #expect(s3Test.reason.contains("S3_SECRET_KEY is not"), "reason: \(s3Test.reason)")
    }

    @Test("the settings keep each component's problem to that component and read strictness regardless")
    func problemsPerComponent() {
        let settings = InfrastructureSettings(reading: [
            "CI": "true", "POSTGRES_URL": "postgresql://u:p@db:5432/app", "REDIS_URL": "localhost:6379", "MINIO_ENDPOINT_URL": "http://s3:9000",
        ])
        #expect(settings.isStrict)
        #expect(settings.configuredEndpoints.postgresURL == "postgresql://u:p@db:5432/app")
        #expect(settings.configurationError(for: [.postgres]) == nil)
        #expect(settings.configurationError(for: [.postgres, .kafka, .nats]) == nil)
        #expect(settings.configurationError(for: [.redis])?.message.contains("REDIS_URL") == true)
        #expect(settings.configurationError(for: [.s3])?.message.contains("S3_ACCESS_KEY and S3_SECRET_KEY are not") == true)
        #expect(settings.problems.map(\.component) == [.redis, .s3])
        #expect(settings.providerError == nil)
        let unknownProvider = InfrastructureSettings(reading: ["PRODREADY_INFRA": "k8s", "PRODREADY_REQUIRE_INFRA": "1"])
        #expect(unknownProvider.isStrict)
        #expect(unknownProvider.providerError?.code == .configuration)
        #expect(unknownProvider.configurationError(for: [.postgres])?.code == .configuration)
    }
}

actor RanFlag {
    var value = false
    func set() { value = true }
}
