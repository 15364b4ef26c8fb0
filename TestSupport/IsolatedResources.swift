public import ProdReadyInfra
import ProdReadyCore
import ProdReadyPostgres
public import PostgresNIO
public import ProdReadyRedis
public import ProdReadyS3
public import ProdReadyNATS
import NIOPosix
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A name unique to this test: `prefix` plus process id and random hex, valid as a Postgres schema, Kafka
/// topic, JetStream stream, Redis key prefix and S3 bucket name (lower-case letters, digits, '-').
public func uniqueName(_ prefix: String) -> String {
    let random = String(UInt64.random(in: 0...UInt64.max) & 0xffff_ffff_ffff, radix: 16)
    return "\(prefix.lowercased())-\(getpid())-\(random)"
}

/// Runs `body`, then `cleanUp` — also when `body` throws, in which case a cleanup failure is ignored so the
/// test reports the original error.
public func runThenCleanUp<Result>(_ body: () async throws -> Result, cleanUp: () async throws -> Void) async throws -> Result {
    let result: Result
    do {
        result = try await body()
    } catch {
        try? await cleanUp()
        throw error
    }
    try await cleanUp()
    return result
}

let testLogger = Logger(label: "prodready.tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// Runs `body` with one Postgres connection, closed afterwards whatever happens.
@discardableResult
public func withPostgresConnection<Result: Sendable>(
    _ url: String,
    _ body: (_ connection: PostgresConnection) async throws -> Result
) async throws -> Result {
    let connection = try await connectPostgres(url)
    return try await runThenCleanUp({ try await body(connection) }, cleanUp: { try await connection.close() })
}

/// Runs `body` with a connection whose `search_path` is a fresh schema, dropped afterwards.
public func withPostgresSchema<Result: Sendable>(
    _ url: String,
    _ body: (_ connection: PostgresConnection, _ schema: String) async throws -> Result
) async throws -> Result {
    let schema = uniqueName("t").replacingAll("-", with: "_")
    return try await withPostgresConnection(url) { connection in
        try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA \(schema)"), logger: testLogger)
        return try await runThenCleanUp({
            try await connection.query(PostgresQuery(unsafeSQL: "SET search_path TO \(schema)"), logger: testLogger)
            return try await body(connection, schema)
        }, cleanUp: {
            try await connection.query(PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(schema) CASCADE"), logger: testLogger)
        })
    }
}

/// Runs `body` with a Redis connection and a key prefix; every key under the prefix is deleted afterwards.
public func withRedisKeyPrefix<Result: Sendable>(
    _ url: String,
    _ body: (_ connection: RedisConnection, _ prefix: String) async throws -> Result
) async throws -> Result {
    let connection = try await RedisConnection(url: url)
    let prefix = uniqueName("t") + ":"
    func cleanUp() async throws {
        let keys = try await connection.scanKeys(matching: prefix + "*")
        for start in stride(from: 0, to: keys.count, by: 500) {
            try await connection.delete(Array(keys[start..<min(start + 500, keys.count)]))
        }
    }
    return try await runThenCleanUp({ try await body(connection, prefix) }, cleanUp: cleanUp)
}

/// Runs `body` with a fresh S3 bucket, emptied and deleted afterwards.
public func withS3Bucket<Result: Sendable>(
    _ endpoint: S3Endpoint,
    _ body: (_ client: S3Client, _ bucket: String) async throws -> Result
) async throws -> Result {
    let client = S3Client(configuration: try S3Configuration(endpoint: endpoint.url, accessKey: endpoint.accessKey, secretKey: endpoint.secretKey, region: endpoint.region))
    let bucket = uniqueName("t")
    try await client.createBucket(bucket)
    func cleanUp() async throws {
        while true {
            let keys = try await client.listKeys(bucket: bucket)
            if keys.isEmpty { break }
            for key in keys { try await client.deleteObject(bucket: bucket, key: key) }
        }
        try await client.deleteBucket(bucket)
    }
    return try await runThenCleanUp({ try await body(client, bucket) }, cleanUp: cleanUp)
}

/// Runs `body` with a JetStream stream on subjects `<name>.>`, deleted afterwards.
public func withJetStream<Result: Sendable>(
    _ url: String,
    configure: (inout JetStreamStreamConfiguration) -> Void = { _ in },
    _ body: (_ connection: NATSConnection, _ stream: JetStreamStreamConfiguration) async throws -> Result
) async throws -> Result {
    let connection = try await NATSConnection(url: url, name: "prodready-tests")
    let name = uniqueName("t").uppercased().replacingAll("-", with: "_")
    var stream = JetStreamStreamConfiguration(name: name, subjects: ["\(name.lowercased()).>"])
    configure(&stream)
    try await connection.createOrUpdateStream(stream)
    return try await runThenCleanUp({ try await body(connection, stream) }, cleanUp: { try await connection.deleteStream(name) })
}
