import Testing
import Synchronization
import ProdReadyCore
import ProdReadyInfra
import ProdReadyS3
import TestSupport

@Suite("S3 client against a real S3 server", .requires(.s3))
struct S3ClientTests {
    func endpoint() async throws -> S3Endpoint {
        try #require(try await TestInfrastructure.shared.endpoints(for: [.s3]).s3)
    }

    @Test("buckets: create is idempotent, existence is reported, a non-empty bucket is not deleted")
    func buckets() async throws {
        try await withS3Bucket(try await endpoint()) { client, bucket in
            try await client.createBucket(bucket)
            #expect(try await client.bucketExists(bucket))
            #expect(try await client.bucketExists(uniqueName("absent")) == false)
            try await client.putObject(bucket: bucket, key: "keep", body: [1])
            let error = await #expect(throws: ProdReadyError.self) { try await client.deleteBucket(bucket) }
            #expect(error?.code == .preconditionFailed, "\(String(describing: error))")
            #expect(try await client.bucketExists(bucket))
        }
    }

    @Test("8 processes' worth of concurrent creates of one new bucket all succeed (SeaweedFS answers a racing CreateBucket with NoSuchBucket)")
    func racingBucketCreates() async throws {
        let endpoint = try await endpoint()
        let client = S3Client(configuration: try S3Configuration(endpoint: endpoint.url, accessKey: endpoint.accessKey, secretKey: endpoint.secretKey, region: endpoint.region))
        for round in 0..<5 {
            let bucket = uniqueName("race\(round)")
            let failures = try await withThrowingTaskGroup(of: String?.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        do { try await client.createBucket(bucket); return nil } catch { return "\(error)" }
                    }
                }
                return try await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
            }
            #expect(failures.isEmpty, "round \(round): \(failures.count) of 8 creates failed, first: \(failures.first ?? "")")
            #expect(try await client.bucketExists(bucket))
            try await client.deleteBucket(bucket)
        }
    }

    @Test("objects: PUT returns the ETag that HEAD and GET report; GET reads ranges; DELETE removes and is idempotent")
    func objects() async throws {
        try await withS3Bucket(try await endpoint()) { client, bucket in
            let body = Array("0123456789abcdef".utf8)
            let etag = try await client.putObject(bucket: bucket, key: "doc.txt", body: body, contentType: "text/plain")
            #expect(etag.count == 32, "an MD5 ETag without quotes, got '\(etag)'")

            let info = try await client.headObject(bucket: bucket, key: "doc.txt")
            #expect(info.size == body.count)
            #expect(info.etag == etag)

            let whole = try await client.getObject(bucket: bucket, key: "doc.txt")
            #expect(whole == S3Object(body: body, etag: etag, totalSize: 16))
            #expect(try await client.getObject(bucket: bucket, key: "doc.txt", range: .bytes(2...5)).body == Array("2345".utf8))
            let tail = try await client.getObject(bucket: bucket, key: "doc.txt", range: .from(12))
            #expect(tail.body == Array("cdef".utf8))
            #expect(tail.totalSize == 16, "the size of the whole object, from Content-Range")
            #expect(try await client.getObject(bucket: bucket, key: "doc.txt", range: .suffix(3)).body == Array("def".utf8))

            let empty = try await client.putObject(bucket: bucket, key: "empty", body: [])
            #expect(try await client.getObject(bucket: bucket, key: "empty") == S3Object(body: [], etag: empty, totalSize: 0))

            try await client.deleteObject(bucket: bucket, key: "doc.txt")
            let missing = await #expect(throws: ProdReadyError.self) { try await client.getObject(bucket: bucket, key: "doc.txt") }
            #expect(missing?.code == .notFound)
            #expect(missing?.message.contains("NoSuchKey") == true, "\(String(describing: missing))")
            let headMissing = await #expect(throws: ProdReadyError.self) { try await client.headObject(bucket: bucket, key: "doc.txt") }
            #expect(headMissing?.code == .notFound)
            try await client.deleteObject(bucket: bucket, key: "doc.txt")
        }
    }

    @Test("keys with spaces, non-ASCII letters and XML/URL metacharacters round-trip and list back unchanged")
    func awkwardKeys() async throws {
        try await withS3Bucket(try await endpoint()) { client, bucket in
            let keys = ["a b/c d.json", "ünïcødé/ключ", "x&y<z>'\"", "plus+equals=question?hash#percent%", "tab\there"]
            for (index, key) in keys.enumerated() {
                try await client.putObject(bucket: bucket, key: key, body: [UInt8(index)])
                #expect(try await client.getObject(bucket: bucket, key: key).body == [UInt8(index)], "key \(key)")
            }
            let listed = try await client.listKeys(bucket: bucket)
            #expect(listed == keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        }
    }

    @Test("compare-and-swap: If-Match with the current ETag replaces, a stale ETag is refused, a missing key is not found")
    func compareAndSwap() async throws {
        try await withS3Bucket(try await endpoint()) { client, bucket in
            let first = try await client.putObject(bucket: bucket, key: "state", body: Array("v1".utf8))
            let second = try await client.putObject(bucket: bucket, key: "state", body: Array("v2".utf8), condition: .ifMatch(etag: first))
            #expect(second != first)
            let stale = await #expect(throws: ProdReadyError.self) {
                try await client.putObject(bucket: bucket, key: "state", body: Array("lost".utf8), condition: .ifMatch(etag: first))
            }
            #expect(stale?.code == .preconditionFailed, "\(String(describing: stale))")
            #expect(try await client.getObject(bucket: bucket, key: "state").body == Array("v2".utf8))
            let absent = await #expect(throws: ProdReadyError.self) {
                try await client.putObject(bucket: bucket, key: "never-written", body: [1], condition: .ifMatch(etag: first))
            }
            #expect(absent?.code == .notFound, "\(String(describing: absent))")
            let created = await #expect(throws: ProdReadyError.self) {
                try await client.putObject(bucket: bucket, key: "state", body: [1], condition: .ifAbsent)
            }
            #expect(created?.code == .preconditionFailed)
        }
    }

    @Test("20 concurrent compare-and-swaps from the same ETag: exactly one wins, 19 get a precondition failure")
    func concurrentCompareAndSwap() async throws {
        try await withS3Bucket(try await endpoint()) { client, bucket in
            let base = try await client.putObject(bucket: bucket, key: "counter", body: Array("0".utf8))
            let outcomes = await withTaskGroup(of: (Int, ProdReadyError?).self) { group in
                for writer in 0..<20 {
                    group.addTask {
                        do {
                            try await client.putObject(bucket: bucket, key: "counter", body: Array("writer \(writer)".utf8), condition: .ifMatch(etag: base))
                            return (writer, nil)
                        } catch {
                            return (writer, error as? ProdReadyError ?? ProdReadyError(.protocolError, "\(error)"))
                        }
                    }
                }
                return await group.reduce(into: [(Int, ProdReadyError?)]()) { $0.append($1) }
            }
            let winners = outcomes.filter { $0.1 == nil }.map(\.0)
            let refusals = outcomes.compactMap(\.1)
            #expect(winners.count == 1, "winners: \(winners)")
            #expect(refusals.count == 19 && refusals.allSatisfy { $0.code == .preconditionFailed }, "refusals: \(refusals)")
            let winner = try #require(winners.first)
            #expect(try await client.getObject(bucket: bucket, key: "counter").body == Array("writer \(winner)".utf8))
        }
    }

    @Test("listing pages through 2,500 keys in order with continuation tokens, start-after and a prefix")
    func listing() async throws {
        try await withS3Bucket(try await endpoint()) { client, bucket in
            let keys = (0..<2_500).map { "events/\(String(repeating: "0", count: 5 - String($0).count))\($0).json" }
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Four writers: the embedded S3 is one Python process that other tests share meanwhile.
                for slice in 0..<4 {
                    group.addTask {
                        for key in stride(from: slice, to: keys.count, by: 4).map({ keys[$0] }) {
                            try await client.putObject(bucket: bucket, key: key, body: Array(key.utf8))
                        }
                    }
                }
                try await group.waitForAll()
            }
            try await client.putObject(bucket: bucket, key: "other/x", body: [0])

            var pages: [S3ListPage] = []
            var token: String?
            repeat {
                let page = try await client.listObjects(bucket: bucket, prefix: "events/", continuationToken: token, maxKeys: 1000)
                pages.append(page)
                token = page.nextContinuationToken
            } while token != nil && pages.count < 10
            #expect(pages.map(\.objects.count) == [1000, 1000, 500])
            #expect(pages.flatMap(\.keys) == keys)
            #expect(pages[0].objects.first?.size == keys[0].utf8.count)

            #expect(try await client.listKeys(bucket: bucket, prefix: "events/") == keys)
            #expect(try await client.listKeys(bucket: bucket, prefix: "events/", startAfter: keys[1233]) == Array(keys[1234...]))
            #expect(try await client.listKeys(bucket: bucket, startAfter: keys.last!) == ["other/x"])
            #expect(try await client.listKeys(bucket: bucket, prefix: "nothing/") == [])
        }
    }

    @Test("malformed input is refused with invalid_argument before anything is sent")
    func malformedInput() async throws {
        for (endpoint, expected) in [("ftp://127.0.0.1:9000", "must start with http"), ("http://", "scheme://host"), ("http://h:1/path", "no path"), ("http://user:pw@h:1", "credentials")] {
            let error = #expect(throws: ProdReadyError.self) { try S3Configuration(endpoint: endpoint, accessKey: "a", secretKey: "s") }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(expected) == true, "\(endpoint): \(String(describing: error))")
            #expect(error?.message.contains("pw") == false, "credentials leaked: \(String(describing: error))")
        }
        #expect(throws: ProdReadyError.self) { try S3Configuration(endpoint: "http://h:1", accessKey: "", secretKey: "s") }

        try await withS3Bucket(try await endpoint()) { client, bucket in
            let cases: [(String, @Sendable () async throws -> Void)] = [
                ("bucket name with upper case", { try await client.createBucket("Bad_Bucket") }),
                ("bucket name too short", { try await client.putObject(bucket: "ab", key: "k", body: []) }),
                ("bucket name ending in a dash", { _ = try await client.bucketExists("bucket-") }),
                ("empty key", { try await client.putObject(bucket: bucket, key: "", body: [1]) }),
                ("key over 1,024 bytes", { try await client.putObject(bucket: bucket, key: String(repeating: "é", count: 513), body: [1]) }),
                ("key with a control character", { try await client.putObject(bucket: bucket, key: "a\u{1}b", body: [1]) }),
                ("empty If-Match ETag", { try await client.putObject(bucket: bucket, key: "k", body: [1], condition: .ifMatch(etag: "")) }),
                ("negative range start", { _ = try await client.getObject(bucket: bucket, key: "k", range: .from(-1)) }),
                ("empty suffix range", { _ = try await client.getObject(bucket: bucket, key: "k", range: .suffix(0)) }),
                ("max-keys 0", { _ = try await client.listObjects(bucket: bucket, maxKeys: 0) }),
                ("empty continuation token", { _ = try await client.listObjects(bucket: bucket, continuationToken: "") }),
            ]
            for (what, operation) in cases {
                let error = await #expect(throws: ProdReadyError.self, "\(what)") { try await operation() }
                #expect(error?.code == .invalidArgument, "\(what): \(String(describing: error))")
            }
            let written = try await client.listKeys(bucket: bucket)
            #expect(written == [], "nothing was written by the refused calls")
        }
    }

    @Test(
        "the embedded S3 server checks credentials: an unknown access key and a wrong secret fail every call with access_denied, not retriable, naming the server's code — a HEAD included, which must not read as \"no such bucket\"",
        .requires(.s3), arguments: [("unknown access key", "InvalidAccessKeyId"), ("wrong secret", "SignatureDoesNotMatch")]
    )
    func badCredentialsAreRefused(what credentials: String, code: String) async throws {
        let endpoint = try #require(try await TestInfrastructure.shared.endpoints(for: [.s3]).s3)
        try await withS3Bucket(endpoint) { good, bucket in
            try await good.putObject(bucket: bucket, key: "k", body: [1, 2, 3])
            let accessKey = credentials == "unknown access key" ? "AKIDNOTISSUED" : endpoint.accessKey
            let client = S3Client(configuration: try S3Configuration(endpoint: endpoint.url, accessKey: accessKey, secretKey: "not-the-secret", region: endpoint.region))
            let calls: [(String, @Sendable () async throws -> Void)] = [
                ("create bucket", { try await client.createBucket(uniqueName("refused")) }),
                ("head bucket", { _ = try await client.bucketExists(bucket) }),
                ("put object", { _ = try await client.putObject(bucket: bucket, key: "k", body: [9]) }),
                ("get object", { _ = try await client.getObject(bucket: bucket, key: "k") }),
                ("list", { _ = try await client.listKeys(bucket: bucket) }),
                ("delete object", { try await client.deleteObject(bucket: bucket, key: "k") }),
            ]
            for (what, call) in calls {
                let error = await #expect(throws: ProdReadyError.self, "\(credentials), \(what)") { try await call() }
                #expect(error?.code == .accessDenied, "\(credentials), \(what): \(String(describing: error))")
                #expect(error?.isRetriable == false, "\(credentials), \(what): retrying with the same credentials cannot help")
                if what != "head bucket" {
                    #expect(error?.message.contains(code) == true, "\(credentials), \(what): \(String(describing: error))")
                }
            }
            // Nothing the refused calls asked for happened.
            #expect(try await good.getObject(bucket: bucket, key: "k").body == [1, 2, 3])
            #expect(try await good.listKeys(bucket: bucket) == ["k"])
        }
    }

    @Test("a stopped S3 server fails calls fast with a retriable error; the same client works again after restart", .requiresEmbedded(.s3))
    func outage() async throws {
        try await withPrivateStack([.s3], label: "s3-outage") { stack in
            let endpoint = try #require(await stack.endpoints.s3)
            let client = S3Client(configuration: try S3Configuration(endpoint: endpoint.url, accessKey: endpoint.accessKey, secretKey: endpoint.secretKey, region: endpoint.region), timeout: .seconds(3))
            let bucket = uniqueName("outage")
            try await client.createBucket(bucket)
            try await client.putObject(bucket: bucket, key: "before", body: [1])

            try await stack.stop(.s3)
            let clock = ContinuousClock()
            let started = clock.now
            let error = await #expect(throws: ProdReadyError.self) { try await client.putObject(bucket: bucket, key: "during", body: [2]) }
            let elapsed = clock.now - started
            #expect(error?.isRetriable == true, "\(String(describing: error))")
            #expect(error?.code == .connectionFailed || error?.code == .timeout, "\(String(describing: error))")
            #expect(elapsed < .seconds(4), "failed after \(elapsed), limit 4 s (timeout 3 s)")

            try await stack.start(.s3)
            try await client.putObject(bucket: bucket, key: "after", body: [3])
            #expect(try await client.listKeys(bucket: bucket) == ["after", "before"])
        }
    }
}
