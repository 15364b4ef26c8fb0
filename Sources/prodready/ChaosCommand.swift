import ArgumentParser
import Foundation
import OMSChaos
import ProdReadyChaos
import ProdReadyCore
import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyRedis
import ProdReadyS3
import ProdReadyService
#if canImport(Glibc)
import Glibc
#endif

/// `prodready chaos lite|out-of-order|soak`: the OMSSmoke suite's chaos scenarios from a terminal, on a private
/// embedded stack with the OMS's four processes, or (`--target external`) on the user's deployment through compose.
struct ChaosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Break the OMS on purpose and count what converges: chaos-lite, out-of-order injection, seeded soak.",
        discussion: """
        Boots a private stack (postgres, kafka, redis, s3) and the OMS's four processes, then runs the mode's \
        scenarios with creates flowing before, during and after each fault, and checks that every acknowledged \
        create converges by SPEC-oms's six checks. Each scenario prints one summary line (fault, hold, commands \
        acknowledged during it, time to converge, lost, duplicated, unexpected) and, with PRODREADY_REPORT_DIR set, \
        appends it as a JSON line to <dir>/oms-chaos.jsonl. Exits 1 if any scenario lost, duplicated or \
        misplaced anything, broke a rule of its fault, or did not converge.

        lite: every chaos-lite scenario (or those named with --scenario): kafka, redis, postgres, s3 down; the \
        publisher SIGKILLed and crashed at after_publish; the instance worker crashed at after_claim; each worker \
        paused past its lease; the instance worker paused while a second one in its group takes over.
        out-of-order: v2 of an instance applied before v1, with the publisher stopped.
        soak: faults drawn from --soak-seed (else PRODREADY_SEED, else random; printed first) for --soak-seconds, \
        each held 2 s, commands flowing throughout. The seed's runner flags map as --chaos-out-of-order → \
        out-of-order and --chaos-soak --soak-seconds 600 --soak-seed 123 → soak --soak-seconds 600 --soak-seed 123.

        --target external runs the same scenarios against your OMS deployment instead: OMS_BASE_URL, \
        PRODREADY_JWT_SECRET, the stores' variables (POSTGRES_URL, KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, \
        MINIO_ENDPOINT_URL or S3_ENDPOINT_URL with S3_ACCESS_KEY and S3_SECRET_KEY) and where it keeps its data \
        (OMS_SCHEMA, OMS_BUCKET, OMS_REDIS_PREFIX, OMS_TOPIC_PREFIX, OMS_GROUP_PREFIX, if not the defaults). Its \
        components and the OMS's processes are stopped, killed, paused and started with docker compose on \
        --compose-file, by service name (--compose-service NAME=SERVICE where yours differ). It needs \
        PRODREADY_ALLOW_DESTRUCTIVE=1. Scenarios that arm a crash point for one launch or need a second instance \
        worker are skipped there, each with the reason.
        """
    )

    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case lite
        case outOfOrder = "out-of-order"
        case soak
    }

    @Argument(help: "lite, out-of-order or soak.") var mode: Mode
    @Option(help: "Only these chaos-lite scenarios (repeatable): \(OMSChaosScenario.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scenario: [String] = []
    @Option(help: "How long the soak runs, in seconds.") var soakSeconds: Int = 300
    @Option(help: "The soak's seed (default: PRODREADY_SEED, else random).") var soakSeed: UInt64?
    @Option(help: "Creates per second while faults come and go.") var rate: Int = 8
    @Option(help: "embedded: a private stack and OMS of its own (default); external: the OMS deployment of OMS_BASE_URL and the variables, its components and processes controlled through docker compose (needs PRODREADY_ALLOW_DESTRUCTIVE=1).")
    var target: Target = .embedded
    @Option(help: "With --target external: the compose file that runs the deployment.") var composeFile: String?
    @Option(help: "With --target external: the compose project (default: the compose file's directory name, as docker compose has it).") var composeProject: String?
    @Option(help: "With --target external: a compose service name that differs from ours, NAME=SERVICE (repeatable); NAME is postgres, kafka, redis, s3 or an OMS process (default: minio for s3, the process names).")
    var composeService: [String] = []
    @OptionGroup var options: CommonOptions

    enum Target: String, ExpressibleByArgument, CaseIterable {
        case embedded
        case external
    }

    func validate() throws {
        try validateRanges([("--soak-seconds", soakSeconds, 10...86_400), ("--rate", rate, 1...200)])
        let known = Set(OMSChaosScenario.allCases.map(\.rawValue))
        if let unknown = scenario.first(where: { !known.contains($0) }) {
            throw ValidationError("unknown scenario '\(unknown)'; one of \(known.sorted().joined(separator: ", "))")
        }
        if !scenario.isEmpty && mode != .lite { throw ValidationError("--scenario applies to lite only") }
        if target == .external {
            guard composeFile != nil else { throw ValidationError("--target external needs --compose-file, the file that runs the deployment") }
            if let bad = composeService.first(where: { $0.split(separator: "=").count != 2 }) {
                throw ValidationError("--compose-service takes NAME=SERVICE, got '\(bad)'")
            }
        } else if composeFile != nil || composeProject != nil || !composeService.isEmpty {
            throw ValidationError("--compose-file, --compose-project and --compose-service apply to --target external only")
        }
    }

    func run() async throws {
        let home = options.resolvedHome
        let seed = soakSeed ?? ProcessInfo.processInfo.environment["PRODREADY_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 0...UInt64.max)
        if mode == .soak {
            // Before anything runs, so an interrupted run can still be replayed.
            print(OMSSoak.schedule(seconds: soakSeconds, seed: seed))
        }
        var outcomes: [OMSChaosOutcome] = []
        do {
            if target == .external {
                outcomes = try await runOnExternal(seed: seed)
            } else {
                // Scenarios that need a replica (a second instance worker) get a deployment of their own; the
                // others share one, as before.
                let chosen = scenario.isEmpty ? OMSChaosScenario.allCases : OMSChaosScenario.allCases.filter { scenario.contains($0.rawValue) }
                let groups: [[String]: [OMSChaosScenario]] = mode == .lite ? Dictionary(grouping: chosen, by: \.replicas) : [[]: []]
                for replicas in groups.keys.sorted(by: { $0.count < $1.count }) {
                    outcomes += try await run(mode: mode, scenarios: groups[replicas] ?? [], replicas: replicas, home: home, seed: seed)
                }
            }
        } catch {
            throw fail(error)
        }
        let failed = outcomes.filter { !$0.summary.passed }
        print("\(outcomes.count - failed.count) of \(outcomes.count) scenarios converged cleanly")
        if !failed.isEmpty { throw ExitCode(1) }
    }

    /// One private deployment (with `replicas` besides the OMS's four processes) and `scenarios` on it, or the
    /// out-of-order case or the soak.
    private func run(mode: Mode, scenarios chosen: [OMSChaosScenario], replicas: [String], home: String, seed: UInt64) async throws -> [OMSChaosOutcome] {
        try await withPrivateOMSDeployment(home: home, label: "chaos", replicas: replicas) { deployment in
            let endpoints = deployment.endpoints
            guard let s3Endpoint = endpoints.s3, let redisURL = endpoints.redisURL, let postgresURL = endpoints.postgresURL, let kafka = endpoints.kafkaBootstrapServers else {
                throw ProdReadyError(.processFailed, "a component of the private stack did not report its address")
            }
            let oms = try await deployment.client(tenant: "chaos")
            let s3 = S3Client(configuration: try S3Configuration(endpoint: s3Endpoint.url, accessKey: s3Endpoint.accessKey, secretKey: s3Endpoint.secretKey, region: s3Endpoint.region))
            let redis = try RedisClient(url: redisURL)
            let control = StackChaosControl(stack: deployment.stack, services: deployment.services, guardDirectory: deployment.guardDirectory)
            return try await withPostgresClient(postgresURL) { postgres in
                // The defaults of `prodready serve`: schema oms, bucket oms-events, Redis prefix oms:, no topic prefix.
                let stores = OMSStores(s3: s3, bucket: "oms-events", redis: redis, redisPrefix: "oms:", postgres: postgres, schema: "oms")
                let target = OMSChaosTarget(oms: oms, stores: stores, control: control, kafkaServers: kafka, commandsTopic: "instance_commands", instanceWorkerGroup: "oms-instance-worker", log: ChaosLog(echo: { progress($0) }))
                return try await run(mode: mode, scenarios: chosen, on: target, seed: seed)
            }
        }
    }

    private func run(mode: Mode, scenarios chosen: [OMSChaosScenario], on target: OMSChaosTarget, seed: UInt64) async throws -> [OMSChaosOutcome] {
        switch mode {
        case .lite:
            var results: [OMSChaosOutcome] = []
            for each in chosen { results.append(try await each.run(on: target, rate: rate)) }
            return results
        case .outOfOrder:
            return [try await OMSOutOfOrder.run(on: target)]
        case .soak:
            return try await OMSSoak.run(on: target, seconds: soakSeconds, seed: seed, rate: rate)
        }
    }

    /// The scenarios against the user's deployment. A crash point armed for one launch and a second instance
    /// worker cannot be arranged through compose: those scenarios are skipped, loudly, or refused when named.
    private func runOnExternal(seed: UInt64) async throws -> [OMSChaosOutcome] {
        let environment = ProcessInfo.processInfo.environment
        guard environment["PRODREADY_ALLOW_DESTRUCTIVE"] == "1" else {
            throw ProdReadyError(.notControllable, "--target external stops and kills parts of your deployment; set PRODREADY_ALLOW_DESTRUCTIVE=1 to allow it")
        }
        let deployment = try ExternalChaosDeployment.read(environment)
        guard let composeFile, let postgresURL = deployment.endpoints.postgresURL, let s3Endpoint = deployment.endpoints.s3, let redisURL = deployment.endpoints.redisURL,
              let kafka = deployment.endpoints.kafkaBootstrapServers else {
            throw ProdReadyError(.configuration, "--target external: the deployment's variables are incomplete")
        }
        var chosen = scenario.isEmpty ? OMSChaosScenario.allCases : OMSChaosScenario.allCases.filter { scenario.contains($0.rawValue) }
        if mode == .lite {
            let impossible = chosen.filter { !$0.replicas.isEmpty || $0.armsCrashPoint }
            if let named = impossible.first(where: { scenario.contains($0.rawValue) }) {
                throw ProdReadyError(.notControllable, "scenario \(named.rawValue) cannot run on an external deployment: \(named.externalObstacle)")
            }
            for each in impossible { print("⚠️  skipped \(each.rawValue) on the external deployment: \(each.externalObstacle)") }
            chosen.removeAll { impossible.contains($0) }
        }
        let projectName = composeProject ?? URL(fileURLWithPath: composeFile).deletingLastPathComponent().lastPathComponent
        let names = Dictionary(composeService.map { entry in
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            return (parts[0], parts[1])
        }) { _, last in last }
        let control = ComposeChaosControl(
            compose: ComposeInfrastructure(composeFile: composeFile, projectName: projectName), serviceNames: names, endpoints: deployment.endpoints, omsBaseURL: deployment.omsBaseURL)
        let token = try await TokenAuthority(secret: deployment.jwtSecret).mint(subject: "prodready-chaos", roles: ["admin"], tenant: "prodready-chaos", ttl: .seconds(86_400))
        let oms = ServiceClient(baseURL: deployment.omsBaseURL, token: token)
        let s3 = S3Client(configuration: try S3Configuration(endpoint: s3Endpoint.url, accessKey: s3Endpoint.accessKey, secretKey: s3Endpoint.secretKey, region: s3Endpoint.region))
        let redis = try RedisClient(url: redisURL)
        return try await withPostgresClient(postgresURL) { postgres in
            let stores = OMSStores(s3: s3, bucket: deployment.data.bucket, redis: redis, redisPrefix: deployment.data.redisPrefix, postgres: postgres, schema: deployment.data.schema)
            let target = OMSChaosTarget(
                oms: oms, stores: stores, control: control, kafkaServers: kafka, commandsTopic: deployment.data.topicPrefix + "instance_commands",
                instanceWorkerGroup: deployment.data.groupPrefix + "oms-instance-worker", log: ChaosLog(echo: { progress($0) }))
            return try await run(mode: mode, scenarios: chosen, on: target, seed: seed)
        }
    }
}

extension OMSChaosScenario {
    /// The scenario restarts a process with a crash point armed for that launch only.
    var armsCrashPoint: Bool {
        if case .crashPoint = fault.action { true } else { false }
    }

    /// Why the scenario cannot run against a deployment controlled through compose.
    var externalObstacle: String {
        if armsCrashPoint { return "it restarts a process with a crash point armed for one launch and reads its exit status, which docker compose cannot do (arm CHAOS_CRASH_POINT in your compose file and run the scenario's checks by hand)" }
        if !replicas.isEmpty { return "it needs \(replicas.joined(separator: ", ")) beside the OMS's four processes" }
        return "none"
    }
}

/// `ChaosControl` over the private stack and the service processes `prodready chaos` started.
struct StackChaosControl: ChaosControl {
    let stack: NativeStack
    let services: StackServices
    let guardDirectory: String

    func stop(_ component: Component) async throws { try await stack.stop(component) }
    func kill(_ component: Component) async throws { try await stack.kill(component) }
    func start(_ component: Component) async throws { try await stack.start(component) }
    func pause(_ component: Component) async throws { try await stack.pause(component) }
    func resume(_ component: Component) async throws { try await stack.resume(component) }

    func stopProcess(_ name: String) async throws { try await services.stop(name) }
    func killProcess(_ name: String) async throws { try await services.kill(name) }
    func startProcess(_ name: String, environment: [String: String], awaitReady: Bool) async throws {
        try await services.start(name, extraEnvironment: environment, awaitReady: awaitReady)
        // Owned like the first launch: gone with this command, SIGKILL included.
        if let pid = await services.record(name)?.identity?.pid { try OwnedProcessDirectory.adopt(processGroup: pid, in: guardDirectory) }
    }
    func pauseProcess(_ name: String) async throws { try await services.pause(name) }
    func resumeProcess(_ name: String) async throws { try await services.resume(name) }
    func exitStatus(of name: String, within timeout: Duration) async throws -> Int32? {
        (try await services.exit(of: name, within: timeout))?.shellStatus
    }
    func logPath(of name: String) async -> String? { await services.record(name)?.logPath }
}
