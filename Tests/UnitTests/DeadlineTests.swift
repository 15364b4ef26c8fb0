import Testing
import Synchronization
import NIOPosix
import ProdReadyCore
import ProdReadyPostgres

/// `withDeadline` with its two timers: a sleeping task (any executor) and a timer armed on an event loop.
@Suite("withDeadline")
struct DeadlineTests {
    static let loop = MultiThreadedEventLoopGroup.singleton.next()

    @Test("the body's value comes back; given an event-loop executor the body runs on that loop", arguments: [false, true])
    func valueComesBack(onEventLoop: Bool) async throws {
        let executor: EventLoopExecutor? = onEventLoop ? EventLoopExecutor(Self.loop) : nil
        let (value, ranOnLoop) = try await withDeadline(.seconds(30), executor: executor) {
            (42, Self.loop.inEventLoop)
        }
        #expect(value == 42)
        #expect(ranOnLoop == onEventLoop)
    }

    @Test("a body that never answers: a retriable timeout once the deadline passes, and the body is cancelled", arguments: [false, true])
    func deadlinePasses(onEventLoop: Bool) async throws {
        let executor: EventLoopExecutor? = onEventLoop ? EventLoopExecutor(Self.loop) : nil
        let cancelled = Atomic(false)
        let error = await #expect(throws: ProdReadyError.self) {
            try await withDeadline(.milliseconds(100), executor: executor) {
                do {
                    try await Task.sleep(for: .seconds(60))
                } catch {
                    cancelled.store(true, ordering: .sequentiallyConsistent)
                    throw error
                }
            }
        }
        #expect(error?.code == .timeout)
        #expect(error?.isRetriable == true)
        let clock = ContinuousClock()
        let until = clock.now + .seconds(10)
        while !cancelled.load(ordering: .sequentiallyConsistent), clock.now < until { try await Task.sleep(for: .milliseconds(10)) }
        let sawCancellation = cancelled.load(ordering: .sequentiallyConsistent)
        #expect(sawCancellation, "the body was not cancelled after the deadline")
    }

    @Test("an error from the body reaches the caller unchanged", arguments: [false, true])
    func bodyErrorPassesThrough(onEventLoop: Bool) async throws {
        let executor: EventLoopExecutor? = onEventLoop ? EventLoopExecutor(Self.loop) : nil
        let error = await #expect(throws: ProdReadyError.self) {
            try await withDeadline(.seconds(30), executor: executor) { () async throws -> Int in
                throw ProdReadyError(.invalidArgument, "bad")
            }
        }
        #expect(error?.code == .invalidArgument)
    }
}
