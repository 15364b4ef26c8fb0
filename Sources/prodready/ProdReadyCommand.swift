import ArgumentParser
import Foundation
import ProdReadyCore
import ProdReadyInfra

@main
struct ProdReadyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prodready",
        abstract: "Boots and controls the infrastructure ProdReady's production-readiness suites run against.",
        discussion: """
        The embedded stack runs PostgreSQL, a Kafka-compatible broker (Tansu, storing to S3), NATS with \
        JetStream, Redis and an S3 server (SeaweedFS) as local processes on 127.0.0.1, with data under \
        .prodready/stack. `eval "$(prodready up)"` exports the variables the suites read.

        PRODREADY_INFRA=compose makes the control commands act on compose/infra.yml through docker compose.
        """,
        subcommands: [
            Up.self, Status.self, Env.self, Down.self, Logs.self,
            Start.self, Stop.self, Kill.self, Pause.self, Resume.self, Restart.self,
            Bench.self, ChaosCommand.self, Hold.self, Prepare.self, OutboxCommand.self, KafkaCommand.self, TokenCommand.self, ServeCommand.self,
        ]
    )
}

struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "ProdReady's state directory (default: PRODREADY_HOME, else the nearest .prodready).")
    var home: String?

    var resolvedHome: String { home ?? prodreadyHome() }

    /// The environment's settings. The embedded and compose stacks do not read the endpoint variables, so there
    /// only a bad provider is an error; an external deployment needs every variable that is set to be right.
    func settings() throws -> InfrastructureSettings {
        let settings = InfrastructureSettings(reading: ProcessInfo.processInfo.environment)
        if let error = settings.providerError ?? (settings.provider == .external ? settings.problems.first?.error : nil) { throw error }
        return settings
    }
}

/// Prints progress on stderr so stdout stays machine-readable (`eval "$(prodready up)"`).
func progress(_ line: String) {
    FileHandle.standardError.write(Data(("prodready: " + line + "\n").utf8))
}

/// Refuses the first option whose value lies outside its range, naming the option and the range.
func validateRanges(_ options: [(name: String, value: Int, range: ClosedRange<Int>)]) throws {
    for (name, value, range) in options where !range.contains(value) {
        throw ValidationError("\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
    }
}

func fail(_ error: any Error) -> ExitCode {
    progress("error: \(error)")
    return ExitCode(1)
}

struct ComponentArgument: ExpressibleByArgument {
    let component: Component
    init?(argument: String) {
        guard let component = try? Component.parseList(argument), component.count == 1 else { return nil }
        self.component = component[0]
    }
    static var allValueStrings: [String] { Component.allCases.map(\.rawValue) }
}

/// The stack the control commands act on.
func controllableInfrastructure(_ options: CommonOptions) async throws -> any Infrastructure {
    let settings = try options.settings()
    if settings.provider == .compose {
        return ComposeInfrastructure(composeFile: composeFilePath())
    }
    if settings.provider == .external {
        return ExternalInfrastructure(endpoints: settings.configuredEndpoints)
    }
    let directory = StackLocations.upStack(home: options.resolvedHome)
    guard FileManager.default.fileExists(atPath: directory + "/state.json") else {
        throw ProdReadyError(.notRunning, "no stack is running (nothing at \(directory)); start one with `prodready up`")
    }
    return try NativeStack(attachingTo: directory, home: options.resolvedHome)
}

func composeFilePath() -> String {
    let home = prodreadyHome()
    let root = home.hasSuffix("/.prodready") ? String(home.dropLast("/.prodready".count)) : FileManager.default.currentDirectoryPath
    return root + "/compose/infra.yml"
}

struct Up: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the embedded stack (or the missing components of it) and the reference services, and print their endpoints.",
        discussion: """
        Idempotent: components and service processes already running are left alone. With the whole stack \
        (no --components) every reference service starts too; --services none skips them. Each service's base \
        URL is printed next to the stack's variables (OMS_BASE_URL=…). Progress goes to stderr, endpoints to stdout.
        """
    )

    @OptionGroup var options: CommonOptions
    @Option(name: .long, help: "Comma-separated components to start: postgres,kafka,nats,redis,s3 or all.")
    var components: String = "all"
    @Option(name: .long, help: "Comma-separated reference services to start on the stack: oms, audit (with the OMS it audits), all or none (default: all with the whole stack, none with --components).")
    var services: String?
    @Flag(name: .long, help: "Print endpoints as JSON instead of export lines.")
    var json = false

    func validate() throws {
        _ = try ServiceCatalog.parse(services ?? "none")
    }

    func run() async throws {
        var requested: [Component]
        let selected = (try? ServiceCatalog.parse(services ?? (components == "all" ? "all" : "none"))) ?? []
        do { requested = try Component.parseList(components) } catch { throw fail(error) }
        for component in selected.flatMap(\.components) where !requested.contains(component) { requested.append(component) }
        do {
            let settings = try options.settings()
            if settings.provider == .compose {
                let compose = ComposeInfrastructure(composeFile: composeFilePath())
                progress("docker compose up \(requested.map(\.rawValue).joined(separator: " "))")
                try await compose.up(requested)
                try printEndpoints(await compose.endpoints(), json: json)
                return
            }
            let home = options.resolvedHome
            let directory = StackLocations.upStack(home: home)
            let stack: NativeStack
            if let existing = await StackLocations.attachUpStack(home: home) {
                progress("reusing the running stack at \(directory)")
                stack = existing
            } else {
                if FileManager.default.fileExists(atPath: directory) {
                    progress("removing a stopped stack left at \(directory)")
                    try FileManager.default.removeItem(atPath: directory)
                }
                stack = try NativeStack(directory: directory, home: home, owned: false)
            }
            let clock = ContinuousClock()
            let began = clock.now
            progress("starting \(Component.closure(requested).map(\.rawValue).joined(separator: ", "))")
            try await stack.ensure(requested, progress: { progress($0) })
            progress("stack ready in \(Int((clock.now - began).milliseconds)) ms; stop it with `prodready down`")
            let endpoints = await stack.endpoints
            let urls = try await startServices(selected, stackDirectory: directory, home: home, endpoints: endpoints)
            try printEndpoints(endpoints, services: urls, json: json)
        } catch {
            throw fail(error)
        }
    }
}

func printEndpoints(_ endpoints: StackEndpoints, services: [(String, String)] = [], json: Bool) throws {
    if json {
        var object: [String: String] = [:]
        for entry in endpoints.environment { object[entry.name] = entry.value }
        for (name, url) in services { object[name] = url }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    } else {
        endpoints.exportLines.forEach { print($0) }
        for (name, url) in services { print("export \(name)='\(url)'") }
    }
}

struct Env: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the running stack's endpoints as export lines (or JSON).")
    @OptionGroup var options: CommonOptions
    @Flag(name: .long, help: "Print JSON instead of export lines.")
    var json = false

    func run() async throws {
        do {
            let infrastructure = try await controllableInfrastructure(options)
            try printEndpoints(await infrastructure.endpoints(), services: await runningServiceURLs(home: options.resolvedHome), json: json)
        } catch {
            throw fail(error)
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show each component's and service process's state and a live health check; exit 3 if any is unhealthy.")
    @OptionGroup var options: CommonOptions
    @Flag(name: .long, help: "Print JSON.")
    var json = false

    func run() async throws {
        do {
            let infrastructure = try await controllableInfrastructure(options)
            let endpoints = await infrastructure.endpoints()
            var reports: [ComponentHealth] = []
            for component in endpoints.components {
                reports.append(await infrastructure.health(component))
            }
            let services = await serviceStatusLines(home: options.resolvedHome)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(reports), as: UTF8.self))
            } else {
                print("provider: \(infrastructure.kind)")
                reports.forEach { print($0) }
                services.lines.forEach { print($0) }
            }
            if reports.contains(where: { !$0.isHealthy }) || !services.healthy { throw ExitCode(3) }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw fail(error)
        }
    }
}

struct Down: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop every service process and component of the stack and remove its data.")
    @OptionGroup var options: CommonOptions
    @Flag(name: .long, help: "Stop the processes but keep the data directory.")
    var keepData = false

    func run() async throws {
        do {
            let settings = try options.settings()
            if settings.provider == .compose {
                try await ComposeInfrastructure(composeFile: composeFilePath()).down()
                return
            }
            let directory = StackLocations.upStack(home: options.resolvedHome)
            guard FileManager.default.fileExists(atPath: directory + "/state.json") else {
                progress("no stack at \(directory); nothing to do")
                return
            }
            let services = StackServices(stackDirectory: directory)
            let serviceProcesses = await services.records().compactMap(\.identity)
            try await services.stopAll()
            if serviceProcesses.contains(where: \.isAlive) {
                throw ProdReadyError(.processFailed, "service processes survived their stop: \(serviceProcesses.filter(\.isAlive))")
            }
            let stack = try NativeStack(attachingTo: directory, home: options.resolvedHome)
            let snapshot = await stack.snapshot
            try await stack.teardown(removeData: !keepData)
            let stillListening = snapshot.ports.filter(LoopbackPort.isListening)
            let stillRunning = snapshot.processes.filter(\.isAlive)
            guard stillListening.isEmpty, stillRunning.isEmpty else {
                throw ProdReadyError(.processFailed, "after down, ports still listening: \(stillListening), processes alive: \(stillRunning)")
            }
            progress("stack stopped; no process left, no port listening\(keepData ? "; data kept at \(directory)" : "")")
        } catch {
            throw fail(error)
        }
    }
}

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the last lines of a component's or a service process's log.")
    @OptionGroup var options: CommonOptions
    @Argument(help: TargetArgument.help)
    var component: TargetArgument
    @Option(name: .shortAndLong, help: "How many lines.")
    var lines: Int = 50

    func run() async throws {
        guard lines > 0 else { throw fail(ProdReadyError(.invalidArgument, "--lines must be positive")) }
        do {
            switch component.target {
            case .component(let component):
                print(try await controllableInfrastructure(options).logs(component, lines: lines))
            case .process(let name):
                guard let record = await StackServices(stackDirectory: StackLocations.upStack(home: options.resolvedHome)).record(name) else {
                    throw ProdReadyError(.notFound, "no service process '\(name)' on this stack; start it with `prodready up --services …`")
                }
                let text = (try? String(contentsOfFile: record.logPath, encoding: .utf8)) ?? ""
                print(text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n"))
            }
        } catch {
            throw fail(error)
        }
    }
}

/// stop|start|kill|pause|resume|restart share one shape.
protocol ControlCommand: AsyncParsableCommand {
    static var operation: ControlOperation { get }
    var options: CommonOptions { get }
    var component: TargetArgument { get }
}

extension ControlCommand {
    func run() async throws {
        do {
            let clock = ContinuousClock()
            let began = clock.now
            switch component.target {
            case .component(let target):
                try await controllableInfrastructure(options).perform(Self.operation, on: target)
                progress("\(Self.operation) \(target): done in \(Int((clock.now - began).milliseconds)) ms")
            case .process(let name):
                try await controlProcess(Self.operation, name, home: options.resolvedHome)
                progress("\(Self.operation) \(name): done in \(Int((clock.now - began).milliseconds)) ms")
            }
        } catch {
            throw fail(error)
        }
    }
}

struct Start: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "Start a stopped component or service process on its port and data.")
    static let operation = ControlOperation.start
    @OptionGroup var options: CommonOptions
    @Argument(help: TargetArgument.help) var component: TargetArgument
}

struct Stop: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a component or service process gracefully (port and data are kept).")
    static let operation = ControlOperation.stop
    @OptionGroup var options: CommonOptions
    @Argument(help: TargetArgument.help) var component: TargetArgument
}

struct Kill: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "SIGKILL a component or service process (a crash, no clean shutdown).")
    static let operation = ControlOperation.kill
    @OptionGroup var options: CommonOptions
    @Argument(help: TargetArgument.help) var component: TargetArgument
}

struct Pause: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "SIGSTOP a component or service process: connections stay open, nothing answers.")
    static let operation = ControlOperation.pause
    @OptionGroup var options: CommonOptions
    @Argument(help: TargetArgument.help) var component: TargetArgument
}

struct Resume: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "SIGCONT a paused component or service process.")
    static let operation = ControlOperation.resume
    @OptionGroup var options: CommonOptions
    @Argument(help: TargetArgument.help) var component: TargetArgument
}

struct Restart: ControlCommand {
    static let configuration = CommandConfiguration(abstract: "Stop then start a component or service process on the same port and data.")
    static let operation = ControlOperation.restart
    @OptionGroup var options: CommonOptions
    @Argument(help: TargetArgument.help) var component: TargetArgument
}

struct Hold: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a stack owned by this process and keep it until the process ends.",
        discussion: """
        Prints the endpoints, then `holding <stack directory>`, and waits. When this process ends — Ctrl-C, \
        SIGTERM or SIGKILL — its watchdog kills every component and removes the directory. Handy for a stack \
        that must not outlive a script, and used by the tests that prove no process is ever orphaned.
        """
    )
    @OptionGroup var options: CommonOptions
    @Option(name: .long, help: "Comma-separated components: postgres,kafka,nats,redis,s3 or all.")
    var components: String = "all"

    func run() async throws {
        let requested: [Component]
        do { requested = try Component.parseList(components) } catch { throw fail(error) }
        do {
            let home = options.resolvedHome
            let stack = try NativeStack(directory: StackLocations.newOwnedStack(home: home, label: "hold"), home: home, owned: true)
            try await stack.ensure(requested, progress: { progress($0) })
            // Unbuffered: whoever waits for the `holding` line may be reading a file, not a terminal.
            let lines = await stack.endpoints.exportLines + ["holding \(stack.directory)"]
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
            while true { try await Task.sleep(for: .seconds(3600)) }
        } catch {
            throw fail(error)
        }
    }
}

struct Prepare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the one-time PostgreSQL template (and spare copies) so the first stack starts fast.",
        discussion: "scripts/bootstrap runs this; it is idempotent and takes a few seconds the first time."
    )
    @OptionGroup var options: CommonOptions

    func run() async throws {
        do {
            let clock = ContinuousClock()
            let began = clock.now
            try await NativeStack.preparePostgresTemplate(home: options.resolvedHome)
            progress("PostgreSQL template ready in \(Int((clock.now - began).milliseconds)) ms")
        } catch {
            throw fail(error)
        }
    }
}
