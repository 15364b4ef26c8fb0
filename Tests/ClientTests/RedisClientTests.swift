import Testing
import Synchronization
import ProdReadyCore
import ProdReadyInfra
import ProdReadyRedis
import TestSupport

@Suite("Redis client against a real Redis server", .requires(.redis))
struct RedisClientTests {
    func url() async throws -> String {
        try #require(try await TestInfrastructure.shared.endpoints(for: [.redis]).redisURL)
    }

    @Test("keys: SET (NX, PX), GET, DEL, INCR, EXPIRE, SCAN, PING and INFO")
    func keys() async throws {
        try await withRedisKeyPrefix(try await url()) { redis, prefix in
            try await redis.ping()
            #expect(try await redis.info("server")["redis_version"]?.isEmpty == false)

            #expect(try await redis.set(prefix + "a", "1"))
            #expect(try await redis.set(prefix + "a", "2", onlyIfAbsent: true) == false, "NX on an existing key")
            #expect(try await redis.get(prefix + "a") == Array("1".utf8))
            #expect(try await redis.get(prefix + "missing") == nil)
            #expect(try await redis.increment(prefix + "counter") == 1)
            #expect(try await redis.increment(prefix + "counter") == 2)

            // Long enough that the second SET lands inside it even on a loaded machine.
            #expect(try await redis.set(prefix + "lock", "owner-1", onlyIfAbsent: true, expiresAfter: .seconds(2)))
            #expect(try await redis.set(prefix + "lock", "owner-2", onlyIfAbsent: true) == false, "the lock is held")
            #expect(try await redis.get(prefix + "lock") == Array("owner-1".utf8))
            try await eventually("the lock to expire", timeout: .seconds(15)) { try await redis.get(prefix + "lock") == nil }
            #expect(try await redis.set(prefix + "lock", "owner-2", onlyIfAbsent: true))

            #expect(try await redis.expire(prefix + "a", after: .milliseconds(100)))
            #expect(try await redis.expire(prefix + "missing", after: .seconds(1)) == false)
            try await eventually("the expired key to vanish", timeout: .seconds(5)) { try await redis.get(prefix + "a") == nil }

            for index in 0..<1_200 { try await redis.set("\(prefix)scan:\(index)", "x") }
            #expect(Set(try await redis.scanKeys(matching: prefix + "scan:*")).count == 1_200)
            #expect(try await redis.delete([prefix + "counter", prefix + "missing"]) == 1)
        }
    }

    @Test("binary keys and values (not UTF-8) round-trip unchanged")
    func binaryKeys() async throws {
        try await withRedisKeyPrefix(try await url()) { redis, prefix in
            let key = Array(prefix.utf8) + [0xff, 0xfe, 0x00, 0x80]
            let value: [UInt8] = [0x00, 0xc3, 0x28, 0xff]
            try await redis.command(bytes: [Array("SET".utf8), key, value])
            #expect(try await redis.command(bytes: [Array("GET".utf8), key]) == .string(value))
            #expect(try await redis.command(bytes: [Array("DEL".utf8), key]) == .integer(1))
        }
    }

    @Test("lists: LPUSH, LMOVE, LREM, LLEN; BLMOVE waits for a push from another connection and times out empty")
    func lists() async throws {
        let url = try await url()
        try await withRedisKeyPrefix(url) { redis, prefix in
            let queue = prefix + "queue", processing = prefix + "processing"
            #expect(try await redis.leftPush(queue, [Array("j1".utf8), Array("j2".utf8)]) == 2)
            #expect(try await redis.move(from: queue, to: processing) == Array("j1".utf8), "FIFO: the oldest job first")
            #expect(try await redis.length(ofList: queue) == 1)
            #expect(try await redis.length(ofList: processing) == 1)
            #expect(try await redis.remove(Array("j1".utf8), from: processing) == 1)
            #expect(try await redis.length(ofList: processing) == 0)
            #expect(try await redis.move(from: prefix + "empty", to: processing) == nil)

            let clock = ContinuousClock()
            let started = clock.now
            #expect(try await redis.move(from: prefix + "empty", to: processing, blockingFor: .milliseconds(300)) == nil)
            let waited = clock.now - started
            #expect(waited >= .milliseconds(290) && waited < .seconds(2), "BLMOVE on an empty list returned after \(waited), expected about 300 ms")

            let other = try await RedisConnection(url: url)
            async let moved = redis.move(from: prefix + "later", to: processing, blockingFor: .seconds(5))
            try await Task.sleep(for: .milliseconds(200))
            try await other.leftPush(prefix + "later", [Array("j3".utf8)])
            #expect(try await moved == Array("j3".utf8))
        }
    }

    @Test("a pipeline sends 2,000 commands in one round trip; an error fails only its own command")
    func pipeline() async throws {
        try await withRedisKeyPrefix(try await url()) { redis, prefix in
            var commands: [[String]] = []
            for index in 0..<1_000 { commands.append(["SET", "\(prefix)p\(index)", "v\(index)"]) }
            commands.append(["INCR", "\(prefix)p0"])  // not an integer: a server error for this command alone
            for index in 0..<999 { commands.append(["GET", "\(prefix)p\(index)"]) }
            let results = try await redis.pipeline(commands)
            #expect(results.count == 2_000)
            #expect(results[0..<1_000].allSatisfy { (try? $0.get()) == .status("OK") })
            guard case .failure(let error) = results[1_000] else { Issue.record("INCR on a string succeeded: \(results[1_000])"); return }
            #expect(error.code == .serverError)
            #expect(error.message.contains("not an integer"), "\(error)")
            for index in 0..<999 {
                #expect((try? results[1_001 + index].get())?.text == "v\(index)", "GET p\(index)")
            }
        }
    }

    @Test("streams: XGROUP, XADD, XREADGROUP, XACK, XPENDING, XLEN; XAUTOCLAIM takes over what a dead consumer held")
    func streams() async throws {
        let url = try await url()
        try await withRedisKeyPrefix(url) { redis, prefix in
            let stream = prefix + "events", group = "workers"
            #expect(try await redis.createGroup(group, on: stream))
            #expect(try await redis.createGroup(group, on: stream) == false, "the group exists already")
            var ids: [String] = []
            for index in 0..<10 {
                ids.append(try await redis.streamAdd(stream, fields: [RedisStreamField("job", "j\(index)"), RedisStreamField("bytes", [0xff, UInt8(index)])]))
            }
            #expect(try await redis.streamLength(stream) == 10)

            // Consumer A reads everything, acknowledges three, then dies holding the other seven.
            let consumerA = try await RedisConnection(url: url)
            let read = try await consumerA.readGroup(group, consumer: "a", stream: stream, count: 100, blockingFor: .seconds(1))
            #expect(read.map(\.id) == ids)
            #expect(read.first?.text("job") == "j0")
            #expect(read.last?.fields.last == RedisStreamField("bytes", [0xff, 9]))
            #expect(try await consumerA.acknowledge(Array(ids.prefix(3)), group: group, stream: stream) == 3)
            await consumerA.close()
            #expect(try await redis.readGroup(group, consumer: "b", stream: stream, blockingFor: .milliseconds(100)) == [], "nothing new for b")

            let pendingA = try await redis.pending(group: group, stream: stream)
            #expect(pendingA.map(\.id) == Array(ids.dropFirst(3)))
            #expect(pendingA.allSatisfy { $0.consumer == "a" && $0.deliveries == 1 })

            #expect(try await redis.autoClaim(group: group, consumer: "b", stream: stream, minimumIdle: .seconds(60)).entries.isEmpty,
                    "entries idle for less than the minimum stay with a")
            try await Task.sleep(for: .milliseconds(150))
            let claimed = try await redis.autoClaim(group: group, consumer: "b", stream: stream, minimumIdle: .milliseconds(100))
            #expect(claimed.entries.map(\.id) == Array(ids.dropFirst(3)))
            #expect(claimed.nextStart == "0-0", "one call covered every pending entry")
            let pendingB = try await redis.pending(group: group, stream: stream, consumer: "b")
            #expect(pendingB.count == 7 && pendingB.allSatisfy { $0.deliveries == 2 }, "\(pendingB)")
            #expect(try await redis.acknowledge(claimed.entries.map(\.id), group: group, stream: stream) == 7)
            #expect(try await redis.pending(group: group, stream: stream) == [])
        }
    }

    @Test("the pool: 40 concurrent callers share at most 3 connections; a blocked BLMOVE holds one while the others work")
    func pool() async throws {
        let url = try await url()
        try await withRedisKeyPrefix(url) { redis, prefix in
            let client = try RedisClient(url: url, maximumConnections: 3)
            async let blocked = client.move(from: prefix + "never", to: prefix + "dst", blockingFor: .milliseconds(800))
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<40 { group.addTask { _ = try await client.increment(prefix + "hits") } }
                try await group.waitForAll()
            }
            #expect(try await redis.get(prefix + "hits") == Array("40".utf8))
            #expect(try await blocked == nil)
            let open = await client.openConnections
            #expect((1...3).contains(open), "opened \(open) connections, limit 3")
        }
    }

    @Test("malformed input: bad URLs, a command without a name, a negative block, a bad pool size, a wrong password")
    func malformedInput() async throws {
        for (bad, expected) in [
            ("http://127.0.0.1:6379", "must start with redis://"), ("redis://", "no host"), ("redis://h:70000", "invalid port"),
            ("redis://h:1/99", "0 to 15"), ("redis://:%zz@h:1", "percent-encoding"),
        ] {
            let error = #expect(throws: ProdReadyError.self) { try RedisEndpoint(url: bad) }
            #expect(error?.code == .invalidArgument)
            #expect(error?.message.contains(expected) == true, "\(bad): \(String(describing: error))")
        }
        #expect(throws: ProdReadyError.self) { try RedisClient(url: "redis://h:1", maximumConnections: 0) }

        let url = try await url()
        let redis = try await RedisConnection(url: url)
        let noName = await #expect(throws: ProdReadyError.self) { try await redis.command([String]()) }
        #expect(noName?.code == .invalidArgument)
        let negative = await #expect(throws: ProdReadyError.self) { try await redis.move(from: "a", to: "b", blockingFor: .milliseconds(-1)) }
        #expect(negative?.code == .invalidArgument)
        let unknown = await #expect(throws: ProdReadyError.self) { try await redis.command(["NOSUCHCOMMAND"]) }
        #expect(unknown?.code == .serverError)
        #expect(unknown?.message.contains("unknown command") == true, "\(String(describing: unknown))")
        try await redis.ping()

        let endpoint = try RedisEndpoint(url: url)
        let wrongPassword = await #expect(throws: ProdReadyError.self) {
            _ = try await RedisConnection(url: "redis://:wrong@\(endpoint.host):\(endpoint.port)")
        }
        #expect(wrongPassword?.code == .accessDenied, "\(String(describing: wrongPassword))")
    }

    @Test("a stopped Redis fails commands fast with a retriable error; the same connection and pool work after restart", .requiresEmbedded(.redis))
    func outage() async throws {
        try await withPrivateStack([.redis], label: "redis-outage") { stack in
            let url = try #require(await stack.endpoints.redisURL)
            let connection = try await RedisConnection(url: url)
            let client = try RedisClient(url: url, maximumConnections: 2)
            try await connection.set("k", "before")
            try await client.ping()

            try await stack.stop(.redis)
            let clock = ContinuousClock()
            for (name, runner) in [("connection", connection as any RedisCommandRunner), ("pool", client)] {
                for attempt in 1...2 {
                    let started = clock.now
                    let error = await #expect(throws: ProdReadyError.self) { try await runner.set("k", "during") }
                    let elapsed = clock.now - started
                    #expect(error?.isRetriable == true, "\(name) attempt \(attempt): \(String(describing: error))")
                    #expect(elapsed < .seconds(3), "\(name) attempt \(attempt) failed after \(elapsed), limit 3 s")
                }
            }

            try await stack.start(.redis)
            #expect(try await connection.get("k") == Array("before".utf8), "AOF kept the value; the connection reconnected by itself")
            try await client.set("k", "after")
            #expect(try await connection.get("k") == Array("after".utf8))
        }
    }
}
