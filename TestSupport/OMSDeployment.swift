import Foundation
public import OMSChaos
import PostgresNIO
import ProdReadyCore
public import ProdReadyInfra
import ProdReadyPostgres
import ProdReadyRedis
import ProdReadyS3

/// The OMS's four processes (SPEC-oms), as `prodready serve` names them: the chaos scenarios' list.
public typealias OMSProcessName = OMSProcesses

/// Where one OMS deployment keeps its data on a shared stack, so deployments and tests never see each other's.
public struct OMSIsolation: Sendable {
    public let schema: String
    public let bucket: String
    public let topicPrefix: String
    public let redisPrefix: String
    public let groupPrefix: String

    /// A fresh isolation for a deployment the test starts.
    public init() {
        let name = uniqueName("oms").replacingAll("-", with: "_")
        schema = name
        bucket = name.replacingAll("_", with: "-")
        topicPrefix = name + "."
        redisPrefix = name + ":"
        groupPrefix = name + "."
    }

    /// Where an external deployment keeps its data: its settings' variables, else the services' defaults.
    public init(externalDeploymentEnvironment environment: [String: String]) {
        let location = OMSDataLocation(environment: environment)
        schema = location.schema
        bucket = location.bucket
        topicPrefix = location.topicPrefix
        redisPrefix = location.redisPrefix
        groupPrefix = location.groupPrefix
    }

    public var environment: [String: String] {
        ["OMS_SCHEMA": schema, "OMS_BUCKET": bucket, "OMS_TOPIC_PREFIX": topicPrefix, "OMS_REDIS_PREFIX": redisPrefix, "OMS_GROUP_PREFIX": groupPrefix]
    }
}

/// Runs `body` with an OMS deployment: the four processes on the stack behind `endpoints` (the suite's shared stack
/// unless given), each with `extraEnvironment` (crash points, leases), or `OMS_BASE_URL`'s deployment when set
/// (then `body`'s isolation says where that deployment keeps its data). Afterwards the processes stop and the
/// deployment's schema, bucket and Redis keys are removed (never an external deployment's).
public func withOMSDeployment<Result: Sendable>(
    endpoints: StackEndpoints? = nil,
    extraEnvironment: [String: String] = [:],
    processes: [String] = OMSProcessName.all,
    _ body: (ServiceDeployment, OMSIsolation) async throws -> Result
) async throws -> Result {
    let endpoints = try await { () async throws -> StackEndpoints in
        if let endpoints { return endpoints }
        return try await TestInfrastructure.shared.endpoints(for: [.postgres, .kafka, .redis, .s3])
    }()
    let environment = ProcessInfo.processInfo.environment
    let external = environment["OMS_BASE_URL"].map { !$0.isEmpty } ?? false
    let isolation = external ? OMSIsolation(externalDeploymentEnvironment: environment) : OMSIsolation()
    let plan = ServiceDeploymentPlan(
        service: "oms", baseURLVariable: "OMS_BASE_URL", processes: processes, apiProcess: OMSProcessName.api,
        environment: isolation.environment.merging(extraEnvironment) { $1 })
    return try await runThenCleanUp({
        try await withServiceDeployment(plan, endpoints: endpoints) { try await body($0, isolation) }
    }, cleanUp: {
        // An external deployment's data is its own: a test removes only what it created through the API.
        guard !external else { return }
        if let url = endpoints.postgresURL {
            try await withPostgresClient(url) { client in
                _ = try await client.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \"\(isolation.schema)\" CASCADE"))
            }
        }
        if let s3 = endpoints.s3 {
            let client = S3Client(configuration: try S3Configuration(endpoint: s3.url, accessKey: s3.accessKey, secretKey: s3.secretKey, region: s3.region))
            if try await client.bucketExists(isolation.bucket) {
                while case let keys = try await client.listKeys(bucket: isolation.bucket), !keys.isEmpty {
                    for key in keys { try await client.deleteObject(bucket: isolation.bucket, key: key) }
                }
                try await client.deleteBucket(isolation.bucket)
            }
        }
        if let url = endpoints.redisURL {
            let redis = try RedisClient(url: url)
            let keys = try await redis.scanKeys(matching: isolation.redisPrefix + "*")
            if !keys.isEmpty { _ = try await redis.delete(keys) }
        }
    })
}
