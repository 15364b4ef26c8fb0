import Testing
import Foundation
import ProdReadyCore
import ProdReadyInfra
import TestSupport

@Suite("Stack lifecycle")
struct StackLifecycleTests {
    @Test("the shared infrastructure answers a round trip for every component", .requires(.postgres, .kafka, .nats, .redis, .s3))
    func sharedStackAnswers() async throws {
        let endpoints = try await TestInfrastructure.shared.endpoints(for: Component.allCases)
        for component in Component.allCases {
            let detail = try await HealthProbe.roundTrip(component, endpoints: endpoints)
            #expect(!detail.isEmpty)
        }
    }

    @Test("a private stack is isolated from the shared one", .requires(.postgres), .requiresEmbedded(.postgres))
    func privateStackIsolation() async throws {
        let shared = try await TestInfrastructure.shared.endpoints(for: [.postgres])
        let table = uniqueName("isolation").replacingAll("-", with: "_")
        try await withPrivateStack([.postgres], label: "isolation") { stack in
            let privateURL = try #require(await stack.endpoints.postgresURL)
            #expect(privateURL != shared.postgresURL)
            try await withPostgresConnection(privateURL) { connection in
                try await connection.query(.init(unsafeSQL: "CREATE TABLE \(table) (id int)"), logger: .init(label: "t"))
            }
        }
        let found = try await withPostgresConnection(try #require(shared.postgresURL)) { connection in
            let rows = try await connection.query("SELECT to_regclass(\(table))::text", logger: .init(label: "t"))
            var found: [String?] = []
            for try await name in rows.decode(String?.self) { found.append(name) }
            return found
        }
        #expect(found == [nil], "table \(table) made in the private stack is visible in the shared one")
    }

    @Test("teardown leaves no process and no listening port", .requiresEmbedded(.postgres, .kafka, .nats, .redis, .s3))
    func teardownLeavesNothing() async throws {
        let home = TestInfrastructure.shared.home
        let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "teardown"), home: home, owned: true)
        try await stack.ensure(Component.allCases)
        let snapshot = await stack.snapshot
        let processes = snapshot.processes
        let ports = snapshot.ports
        #expect(processes.count == 6, "five components and the broker's own S3 server: \(processes)")
        #expect(processes.allSatisfy { $0.isAlive })
        try await stack.teardown(removeData: true)
        #expect(processes.filter(\.isAlive).isEmpty, "still alive: \(processes.filter(\.isAlive))")
        #expect(ports.filter(LoopbackPort.isListening).isEmpty, "still listening: \(ports.filter(LoopbackPort.isListening))")
        #expect(!FileManager.default.fileExists(atPath: stack.directory))
    }

    @Test("a stack's processes die with their owner, even when the owner is SIGKILLed, and the sockets SeaweedFS left in /tmp go too", .requiresEmbedded(.postgres, .nats, .redis, .s3))
    func noOrphansAfterOwnerIsKilled() async throws {
        let owner = try ServiceProcess(
            name: "hold",
            executable: try ServiceProcess.builtExecutable(named: "prodready"),
            arguments: ["hold", "--components", "postgres,nats,redis,s3", "--home", TestInfrastructure.shared.home],
            readiness: .logLine("holding ")
        )
        try await owner.start(timeout: .seconds(60))
        let line = try #require(owner.readLog()?.split(separator: "\n").first { $0.hasPrefix("holding ") })
        let directory = String(line.dropFirst("holding ".count))
        let stack = try NativeStack(attachingTo: directory, home: TestInfrastructure.shared.home)
        let snapshot = await stack.snapshot
        let processes = snapshot.processes
        let ports = snapshot.ports
        #expect(processes.count == 4)
        #expect(processes.allSatisfy { $0.isAlive })
        let s3 = try #require(snapshot.component(.s3))
        let sockets = try #require(s3.seaweed).socketPaths(s3Port: s3.port)
        try await eventually("SeaweedFS's gRPC sockets in /tmp", timeout: .seconds(20)) {
            let missing = sockets.filter { !FileManager.default.fileExists(atPath: $0) }
            return missing.count <= 2 ? .done(true) : .pending("not yet bound: \(missing)")
        }

        try await owner.kill()

        try await eventually("the held stack's processes, ports, directory and sockets to go after its owner was SIGKILLed", timeout: .seconds(10)) {
            let alive = processes.filter(\.isAlive)
            let listening = ports.filter(LoopbackPort.isListening)
            let directoryLeft = FileManager.default.fileExists(atPath: directory)
            let socketsLeft = sockets.filter { FileManager.default.fileExists(atPath: $0) }
            if alive.isEmpty && listening.isEmpty && !directoryLeft && socketsLeft.isEmpty { return .done(true) }
            return .pending("alive \(alive), listening \(listening), directory left: \(directoryLeft), sockets left: \(socketsLeft)")
        }
        try await owner.cleanUp()
    }
}

@Suite("Infrastructure resolution")
struct ResolutionTests {
    @Test("external without variables says which ones are missing")
    func externalMissingVariables() async {
        let infrastructure = TestInfrastructure(environment: ["PRODREADY_INFRA": "external"])
        let error = await #expect(throws: ProdReadyError.self) { try await infrastructure.source(for: [.postgres, .redis]) }
        #expect(error?.message.contains("POSTGRES_URL") == true)
        #expect(error?.message.contains("REDIS_URL") == true)
    }

    @Test("external infrastructure that does not answer is reported unhealthy with the client's error")
    func externalUnreachable() async throws {
        let closedPort = try LoopbackPort.free()
        let infrastructure = TestInfrastructure(environment: [
            "PRODREADY_INFRA": "external",
            "REDIS_URL": "redis://127.0.0.1:\(closedPort)",
        ])
        let source = try await infrastructure.source(for: [.redis])
        #expect(source.kind == .external)
        let health = await source.health(.redis)
        #expect(!health.isHealthy)
        #expect(health.detail.contains("cannot connect to Redis at 127.0.0.1:\(closedPort)"), "detail: \(health.detail)")
    }

    @Test("external infrastructure is never controllable, so chaos tests skip with that reason")
    func externalNotControllable() async throws {
        let infrastructure = TestInfrastructure(environment: [
            "PRODREADY_INFRA": "external",
            "REDIS_URL": "redis://127.0.0.1:1",
            "PRODREADY_ALLOW_DESTRUCTIVE": "1",
        ])
        let verdict = await infrastructure.destructiveControlAllowed(for: [.redis], operations: [.kill])
        #expect(!verdict.allowed)
        #expect(verdict.reason.contains("cannot kill"))
        let source = try await infrastructure.source(for: [.redis])
        let error = await #expect(throws: ProdReadyError.self) { try await source.perform(.stop, on: .redis) }
        #expect(error?.code == .notControllable)
    }

    @Test("an unknown provider is a configuration error, not a silent fallback")
    func unknownProvider() async {
        let infrastructure = TestInfrastructure(environment: ["PRODREADY_INFRA": "k8s"])
        let error = await #expect(throws: ProdReadyError.self) { try await infrastructure.source(for: [.redis]) }
        #expect(error?.code == .configuration)
    }
}

@Suite("ServiceProcess")
struct ServiceProcessTests {
    @Test("a server started, SIGKILLed and restarted on the same data directory keeps its data", .requiresEmbedded(.redis))
    func restartOnSameData() async throws {
        let port = try LoopbackPort.free()
        let directory = "\(TestInfrastructure.shared.home)/services/\(uniqueName("redis"))"
        let server = try ServiceProcess(
            name: "redis",
            executable: "/usr/bin/redis-server",
            arguments: ["--bind", "127.0.0.1", "--port", String(port), "--dir", directory, "--appendonly", "yes", "--save", ""],
            dataDirectory: directory,
            readiness: .logLine("Ready to accept connections")
        )
        try await server.start()
        let url = "redis://127.0.0.1:\(port)"
        try await RedisCheck.set(url, "survivor", "yes")
        try await server.kill()
        #expect(await server.isRunning == false)
        try await server.start()
        #expect(await server.launches == 2)
        #expect(try await RedisCheck.get(url, "survivor") == "yes")
        try await server.cleanUp()
        #expect(!LoopbackPort.isListening(port))
    }

    @Test("a process that exits before it is ready fails start with its log")
    func exitsEarly() async throws {
        let server = try ServiceProcess(name: "false", executable: "/bin/sh", arguments: ["-c", "echo boom-\(getpid()); exit 3"], readiness: .logLine("never"))
        let error = await #expect(throws: ProdReadyError.self) { try await server.start(timeout: .seconds(10)) }
        #expect(error?.code == .processFailed)
        #expect(error?.message.contains("boom-") == true)
        try await server.cleanUp()
    }
}

import ProdReadyRedis

enum RedisCheck {
    static func set(_ url: String, _ key: String, _ value: String) async throws {
        try await RedisConnection(url: url).command(["SET", key, value])
    }

    static func get(_ url: String, _ key: String) async throws -> String? {
        try await RedisConnection(url: url).command(["GET", key]).text
    }
}

@Suite("Guards")
struct GuardTests {
    @Test("the reason for a skip names the variable to set and what was tried")
    func skipReason() async throws {
        let local = TestInfrastructure(environment: ["PRODREADY_INFRA": "external"])
        #expect(local.isStrict == false)
        let unmet = try #require(await InfrastructureTrait.unmet(InfrastructureRequirement(components: [.kafka]), infrastructure: local))
        #expect(unmet.kind == .missing)
        #expect(unmet.reason.contains("KAFKA_BOOTSTRAP_SERVERS"))
        guard case .skip(let message) = GuardDecision.decide(unmet, strict: local.isStrict) else {
            Issue.record("a non-strict run must skip")
            return
        }
        #expect(message.contains("prodready up"))
    }

    @Test("with an incomplete S3 configuration and CI=true, a Postgres-only test still runs against a real Postgres", .requires(.postgres))
    func partialS3LeavesPostgresTestsRunning() async throws {
        let postgresURL = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        let environment = [
            "CI": "true", "PRODREADY_INFRA": "external", "POSTGRES_URL": postgresURL, "MINIO_ENDPOINT_URL": "http://127.0.0.1:1",
        ]
        let infrastructure = TestInfrastructure(environment: environment)
        let postgresOnly = InfrastructureTrait(requirement: InfrastructureRequirement(components: [.postgres]), infrastructure: infrastructure)
        #expect(await postgresOnly.decision() == .run)
        let needsS3 = InfrastructureTrait(requirement: InfrastructureRequirement(components: [.postgres, .s3]), infrastructure: infrastructure)
        guard case .fail(let reason) = await needsS3.decision() else {
            Issue.record("a test that needs S3 must fail on the incomplete S3 configuration in strict mode")
            return
        }
        #expect(reason.contains("MINIO_ENDPOINT_URL is set but S3_ACCESS_KEY and S3_SECRET_KEY are not"), "reason: \(reason)")
    }

    @Test("a reachable component meets the requirement and the body runs", .requires(.redis))
    func metRequirementRuns() async throws {
        let trait = InfrastructureTrait(requirement: InfrastructureRequirement(components: [.redis]))
        let ran = Flag()
        try await trait.provideScope(for: try #require(Test.current), testCase: Test.Case.current) { await ran.set() }
        #expect(await ran.value)
    }
}

actor Flag {
    var value = false
    func set() { value = true }
}
