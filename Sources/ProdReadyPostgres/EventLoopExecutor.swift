public import NIOCore
public import ProdReadyCore

/// Runs Swift tasks on one NIO event loop.
///
/// A task that prefers this executor (`withTaskExecutorPreference`) and talks to connections living on the same
/// loop writes its requests and reads their answers on one thread: no wake-up of the loop per request and no hop
/// back to the global pool per answer. On a 2-core machine those hops cost as much client CPU as the protocol
/// work itself. Code running here shares the thread with the connections' I/O, so it must never block.
public final class EventLoopExecutor: TaskExecutor, TimerScheduling {
    public let eventLoop: any EventLoop

    public init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    public func schedule(after delay: Duration, _ action: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        let (seconds, attoseconds) = delay.components
        let nanoseconds = seconds >= Int64.max / 1_000_000_000 ? Int64.max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        let scheduled = eventLoop.scheduleTask(in: .nanoseconds(max(0, nanoseconds))) { action() }
        return { scheduled.cancel() }
    }
}
