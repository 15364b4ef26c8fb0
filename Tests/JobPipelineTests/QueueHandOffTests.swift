import Testing
import ProdReadyCore
import ProdReadyInfra
import ProdReadyRedis
import TestSupport

/// The job pipeline's worker moves a job from the queue to its processing list in one atomic step, so a
/// worker that dies holding a job leaves it visible instead of lost.
@Suite("Job pipeline: Redis queue hand-off", .requires(.redis))
struct QueueHandOffTests {
    @Test("LMOVE hands each job to exactly one worker, and a held job stays visible until acknowledged")
    func atomicHandOff() async throws {
        let url = try #require(try await TestInfrastructure.shared.endpoints(for: [.redis]).redisURL)
        try await withRedisKeyPrefix(url) { connection, prefix in
            let queue = prefix + "queue"
            for job in 1...100 { try await connection.command(["LPUSH", queue, "job-\(job)"]) }
            let claimed = await withTaskGroup(of: [String].self) { group in
                for worker in 0..<4 {
                    group.addTask {
                        guard let own = try? await RedisConnection(url: url) else { return [] }
                        var jobs: [String] = []
                        while let reply = try? await own.command(["LMOVE", queue, "\(prefix)processing:\(worker)", "RIGHT", "LEFT"]), let job = reply.text {
                            jobs.append(job)
                        }
                        return jobs
                    }
                }
                return await group.reduce(into: [String]()) { $0.append(contentsOf: $1) }
            }
            #expect(claimed.count == 100)
            #expect(Set(claimed) == Set((1...100).map { "job-\($0)" }), "a job was lost or handed out twice")
            #expect(try await connection.command(["LLEN", queue]) == .integer(0))
            var held: Int64 = 0
            for worker in 0..<4 {
                if case .integer(let length) = try await connection.command(["LLEN", "\(prefix)processing:\(worker)"]) { held += length }
            }
            #expect(held == 100, "claimed jobs must stay visible in processing lists until acknowledged")
        }
    }
}
