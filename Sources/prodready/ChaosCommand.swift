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
/// embedded stack with the OMS's four processes.
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
        paused past its lease.
        out-of-order: v2 of an instance applied before v1, with the publisher stopped.
        soak: faults drawn from --soak-seed (else PRODREADY_SEED, else random; printed first) for --soak-seconds, \
        each held 2 s, commands flowing throughout. The seed's runner flags map as --chaos-out-of-order → \
        out-of-order and --chaos-soak --soak-seconds 600 --soak-seed 123 → soak --soak-seconds 600 --soak-seed 123.
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
    @OptionGroup var options: CommonOptions

    func validate() throws {
        try validateRanges([("--soak-seconds", soakSeconds, 10...86_400), ("--rate", rate, 1...200)])
        let known = Set(OMSChaosScenario.allCases.map(\.rawValue))
        if let unknown = scenario.first(where: { !known.contains($0) }) {
            throw ValidationError("unknown scenario '\(unknown)'; one of \(known.sorted().joined(separator: ", "))")
        }
        if !scenario.isEmpty && mode != .lite { throw ValidationError("--scenario applies to lite only") }
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
            // Scenarios that need a replica (a second instance worker) get a deployment of their own; the others
            // share one, as before.
            let chosen = scenario.isEmpty ? OMSChaosScenario.allCases : OMSChaosScenario.allCases.filter { scenario.contains($0.rawValue) }
            let groups: [[String]: [OMSChaosScenario]] = mode == .lite ? Dictionary(grouping: chosen, by: \.replicas) : [[]: []]
            for replicas in groups.keys.sorted(by: { $0.count < $1.count }) {
                outcomes += try await run(mode: mode, scenarios: groups[replicas] ?? [], replicas: replicas, home: home, seed: seed)
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
        }
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
}
