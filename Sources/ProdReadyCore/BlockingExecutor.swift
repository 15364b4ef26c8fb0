import Dispatch

/// Runs blocking calls (C client libraries, `waitpid`, file I/O) on a dedicated serial queue so they never
/// occupy a thread of Swift's cooperative pool.
///
/// One executor serialises every call made through it, which is also how the C handles it guards are kept
/// from being used from two threads at once.
public final class BlockingExecutor: Sendable {
    private let queue: DispatchQueue

    public init(label: String) {
        queue = DispatchQueue(label: "prodready.blocking.\(label)")
    }

    public func run<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Result(catching: body))
            }
        }
    }

    /// Queues `body` without waiting for it: for `deinit`, which cannot await but must not block the
    /// thread it runs on (C handles are freed this way, after every call already queued).
    public func submit(_ body: @escaping @Sendable () -> Void) {
        queue.async(execute: body)
    }
}

/// A C handle passed between the executor's queue and Swift code.
///
/// @unchecked Sendable: it is only an address; the code that dereferences it does so on the owning
/// client's `BlockingExecutor`, which serialises every use.
public struct SendableHandle: @unchecked Sendable {
    public let pointer: OpaquePointer
    public init(_ pointer: OpaquePointer) { self.pointer = pointer }
}

extension Duration {
    /// Whole milliseconds (truncated), the unit C client libraries take for timeouts.
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Whole microseconds (truncated).
    public var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }

    /// Milliseconds with the fraction, for reports.
    public var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }

    /// Whole nanoseconds (truncated), the unit of JetStream durations.
    public var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
