import Testing
import Foundation
import ProdReadyCore
import ProdReadyInfra
import TestSupport

/// The `prodready` executable, run as a user would, against a home directory of its own.
@Suite("prodready CLI", .requiresEmbedded(.redis, .nats))
struct CLITests {
    struct Outcome {
        var status: Int32
        var output: String
    }

    static func prodready(_ arguments: [String], environment: [String: String] = [:]) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try ServiceProcess.builtExecutable(named: "prodready"))
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        merged.removeValue(forKey: "PRODREADY_INFRA")
        merged.merge(environment) { $1 }
        process.environment = merged
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    /// A home with the project's virtualenv and templates linked in, but stacks of its own.
    static func scratchHome() throws -> String {
        let shared = TestInfrastructure.shared.home
        let home = "\(shared)/scratch/\(uniqueName("cli"))"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        for entry in ["venv", "templates", "lib"] where FileManager.default.fileExists(atPath: "\(shared)/\(entry)") {
            try FileManager.default.createSymbolicLink(atPath: "\(home)/\(entry)", withDestinationPath: "\(shared)/\(entry)")
        }
        return home
    }

    @Test("up → env → status → stop → status fails → start → down leaves nothing; tests reuse the up stack")
    func upStatusStopStartDown() async throws {
        let home = try Self.scratchHome()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let up = try Self.prodready(["up", "--components", "redis,nats", "--home", home])
        try #require(up.status == 0, "up failed: \(up.output)")
        #expect(up.output.contains("export REDIS_URL='redis://127.0.0.1:"))
        #expect(up.output.contains("export NATS_URL='nats://127.0.0.1:"))
        #expect(up.output.contains("redis ready on 127.0.0.1:"), "up should report progress: \(up.output)")

        let env = try Self.prodready(["env", "--json", "--home", home])
        #expect(env.status == 0)
        let endpoints = try JSONSerialization.jsonObject(with: Data(env.output.utf8.drop { $0 != UInt8(ascii: "{") })) as? [String: String]
        let redisURL = try #require(endpoints?["REDIS_URL"])

        // A test process in auto mode finds and reuses this stack rather than starting its own.
        let infrastructure = TestInfrastructure(environment: ["PRODREADY_HOME": home])
        let source = try await infrastructure.source(for: [.redis])
        #expect(source.kind == .native)
        #expect(await source.endpoints().redisURL == redisURL)
        let verdict = await infrastructure.destructiveControlAllowed(for: [.redis], operations: [.kill])
        #expect(!verdict.allowed, "a stack this process did not start must need PRODREADY_ALLOW_DESTRUCTIVE")
        #expect(verdict.reason.contains("PRODREADY_ALLOW_DESTRUCTIVE"))

        #expect(try Self.prodready(["status", "--home", home]).status == 0)
        #expect(try Self.prodready(["stop", "redis", "--home", home]).status == 0)
        let degraded = try Self.prodready(["status", "--home", home])
        #expect(degraded.status == 3, "status must fail while redis is stopped: \(degraded.output)")
        #expect(degraded.output.contains("redis: UNHEALTHY"))
        #expect(try Self.prodready(["start", "redis", "--home", home]).status == 0)
        #expect(await HealthProbe.check(.redis, endpoints: await source.endpoints()).isHealthy)

        let snapshot = try await NativeStack(attachingTo: StackLocations.upStack(home: home), home: home).snapshot
        let down = try Self.prodready(["down", "--home", home])
        #expect(down.status == 0, "down failed: \(down.output)")
        #expect(down.output.contains("no process left, no port listening"))
        let processes = snapshot.components.values.compactMap(\.process)
        #expect(processes.count == 2)
        #expect(processes.filter(\.isAlive).isEmpty)
        #expect(snapshot.components.values.map(\.port).filter(LoopbackPort.isListening).isEmpty)
    }

    @Test("control commands without a running stack exit 1 and say how to start one")
    func noStack() throws {
        let home = try Self.scratchHome()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let outcome = try Self.prodready(["stop", "postgres", "--home", home])
        #expect(outcome.status == 1)
        #expect(outcome.output.contains("no stack is running"))
        #expect(outcome.output.contains("prodready up"))
    }

    @Test("unknown components and bad option values are refused with the valid choices", arguments: [
        (["up", "--components", "postgres,mysql"], "unknown component 'mysql'"),
        (["stop", "mongodb"], "Please provide one of 'postgres', 'kafka', 'nats', 'redis' or 's3'"),
        (["logs", "redis", "--lines", "0"], "--lines must be positive"),
        (["bench", "--runs", "0"], "--runs must be between 1 and 50"),
    ])
    func badArguments(arguments: [String], message: String) throws {
        let home = try Self.scratchHome()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let outcome = try Self.prodready(arguments + ["--home", home])
        #expect(outcome.status != 0)
        #expect(outcome.output.contains(message), "output: \(outcome.output)")
    }

    @Test("a missing server binary is named together with the install step that provides it")
    func missingBinary() throws {
        let home = "\(TestInfrastructure.shared.home)/scratch/\(uniqueName("empty"))"
        defer { try? FileManager.default.removeItem(atPath: home) }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let outcome = try Self.prodready(["up", "--components", "s3", "--home", home])
        #expect(outcome.status == 1)
        #expect(outcome.output.contains("moto_server not found"))
        #expect(outcome.output.contains("scripts/bootstrap"))
    }
}
