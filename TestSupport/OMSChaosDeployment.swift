import Foundation
public import OMSChaos
import PostgresNIO
import ProdReadyCore
public import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyRedis
import ProdReadyS3
#if canImport(Glibc)
import Glibc
#endif

/// `ChaosControl` over a private stack and the deployment's processes: what the chaos scenarios act through
/// in the suites (`prodready chaos` has its own over the stack `prodready up` runs).
public struct DeploymentChaosControl: ChaosControl {
    public let stack: NativeStack
    public let deployment: ServiceDeployment

    public init(stack: NativeStack, deployment: ServiceDeployment) {
        self.stack = stack
        self.deployment = deployment
    }

    public func stop(_ component: Component) async throws { try await stack.stop(component) }
    public func kill(_ component: Component) async throws { try await stack.kill(component) }
    public func start(_ component: Component) async throws {
        try await stack.start(component)
        await lowerPriority(of: stack, [component])
    }
    public func pause(_ component: Component) async throws { try await stack.pause(component) }
    public func resume(_ component: Component) async throws { try await stack.resume(component) }

    public func stopProcess(_ name: String) async throws { try await deployment.process(name).stop() }
    public func killProcess(_ name: String) async throws { try await deployment.process(name).kill() }
    public func startProcess(_ name: String, environment: [String: String], awaitReady: Bool) async throws {
        try await deployment.process(name).start(timeout: .seconds(60), extraEnvironment: environment, awaitReady: awaitReady)
    }
    public func pauseProcess(_ name: String) async throws { try await deployment.process(name).send(signal: SIGSTOP) }
    public func resumeProcess(_ name: String) async throws { try await deployment.process(name).send(signal: SIGCONT) }
    public func exitStatus(of name: String, within timeout: Duration) async throws -> Int32? {
        (try await deployment.process(name).exit(within: timeout))?.shellStatus
    }
    public func logPath(of name: String) async -> String? { try? deployment.process(name).logPath }
}

/// Puts `components` of `stack` (each a process group: Postgres's backends, SeaweedFS's servers) at nice 19, like
/// the deployment's service processes: a chaos run keeps both cores busy, and the timing-sensitive tests running
/// beside it on the shared stack failed their bounds at normal priority (a 2 s operation timeout, a heartbeat).
/// Puts a private stack's components at the lowest priority, as chaos stacks run: at normal priority they push
/// the timing-bound tests of the shared stack over their bounds.
public func lowerStackPriority(_ stack: NativeStack) async { await lowerPriority(of: stack, Component.allCases) }

func lowerPriority(of stack: NativeStack, _ components: [Component]) async {
    for component in components {
        guard let pid = await stack.process(of: component)?.pid else { continue }
        _ = setpriority(__priority_which_t(PRIO_PGRP.rawValue), id_t(pid), 19)
    }
}

/// Runs `body` with an OMS chaos target of its own: a private stack (postgres, kafka, redis, s3), the OMS's four
/// processes on it (and `replicas`, such as a second instance worker), clients for its stores, and a control that may stop, kill and pause any of it.
public func withOMSChaosTarget<Result: Sendable>(
    label: String,
    extraEnvironment: [String: String] = [:],
    replicas: [String] = [],
    _ body: (OMSChaosTarget) async throws -> Result
) async throws -> Result {
    try await withPrivateStack([.postgres, .kafka, .redis, .s3], label: label) { stack in
        await lowerPriority(of: stack, [.postgres, .kafka, .redis, .s3])
        let endpoints = await stack.endpoints
        return try await withOMSDeployment(endpoints: endpoints, extraEnvironment: extraEnvironment, processes: OMSProcessName.all + replicas) { deployment, isolation in
            guard let s3Endpoint = endpoints.s3, let redisURL = endpoints.redisURL, let postgresURL = endpoints.postgresURL, let kafka = endpoints.kafkaBootstrapServers else {
                throw ProdReadyError(.configuration, "the private stack of \(label) lacks one of postgres, kafka, redis, s3")
            }
            let s3 = S3Client(configuration: try S3Configuration(endpoint: s3Endpoint.url, accessKey: s3Endpoint.accessKey, secretKey: s3Endpoint.secretKey, region: s3Endpoint.region))
            let redis = try RedisClient(url: redisURL)
            let oms = try await deployment.client(tenant: uniqueName("chaos"))
            return try await withPostgresClient(postgresURL) { postgres in
                let stores = OMSStores(s3: s3, bucket: isolation.bucket, redis: redis, redisPrefix: isolation.redisPrefix, postgres: postgres, schema: isolation.schema)
                let target = OMSChaosTarget(
                    oms: oms, stores: stores, control: DeploymentChaosControl(stack: stack, deployment: deployment), kafkaServers: kafka,
                    commandsTopic: isolation.topicPrefix + "instance_commands", instanceWorkerGroup: isolation.groupPrefix + "oms-instance-worker", log: ChaosLog())
                return try await body(target)
            }
        }
    }
}
