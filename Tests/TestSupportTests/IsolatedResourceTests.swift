import Testing
import ProdReadyCore
import ProdReadyInfra
import TestSupport

@Suite("Isolated resources")
struct IsolatedResourceTests {
    @Test("a Postgres schema per test: unqualified tables land in it, and it is dropped afterwards", .requires(.postgres))
    func postgresSchema() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.postgres]).postgresURL)
        let schema = try await withPostgresSchema(url) { connection, schema in
            try await connection.query("CREATE TABLE orders (id int)", logger: .init(label: "t"))
            let rows = try await connection.query("SELECT table_schema FROM information_schema.tables WHERE table_name = 'orders' AND table_schema = current_schema()", logger: .init(label: "t"))
            var found: [String] = []
            for try await name in rows.decode(String.self) { found.append(name) }
            #expect(found == [schema])
            return schema
        }
        let remaining = try await withPostgresConnection(url) { connection in
            let rows = try await connection.query("SELECT count(*) FROM information_schema.schemata WHERE schema_name = \(schema)", logger: .init(label: "t"))
            var count = -1
            for try await value in rows.decode(Int.self) { count = value }
            return count
        }
        #expect(remaining == 0, "schema \(schema) was left behind")
    }

    @Test("a Redis key prefix per test: every key under it is deleted afterwards, others are untouched", .requires(.redis))
    func redisPrefix() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.redis]).redisURL)
        let outsider = uniqueName("outsider")
        let prefix = try await withRedisKeyPrefix(url) { connection, prefix in
            for n in 0..<1200 { try await connection.command(["SET", "\(prefix)k\(n)", "v"]) }
            try await connection.command(["SET", outsider, "keep"])
            return prefix
        }
        try await withRedisKeyPrefix(url) { connection, _ in
            let left = try await connection.command(["KEYS", prefix + "*"])
            #expect(left == .array([]), "keys left under \(prefix): \(left)")
            #expect(try await connection.command(["GET", outsider]).text == "keep")
            try await connection.command(["DEL", outsider])
        }
    }

    @Test("an S3 bucket per test is emptied and deleted afterwards", .requires(.s3))
    func s3Bucket() async throws {
        let endpoint = try #require(try await TestInfrastructure.shared.endpoints(for: [.s3]).s3)
        let bucket = try await withS3Bucket(endpoint) { client, bucket in
            try await client.putObject(bucket: bucket, key: "a/b.txt", body: Array("x".utf8))
            return bucket
        }
        try await withS3Bucket(endpoint) { client, _ in
            let error = await #expect(throws: ProdReadyError.self) { try await client.listKeys(bucket: bucket) }
            #expect(error?.code == .notFound)
        }
    }
}
