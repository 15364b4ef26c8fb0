public import ProdReadyCore
public import ProdReadyRedis
public import ProdReadyReliability

/// An outbox sink that appends each event to a Redis stream (XADD) or pushes it onto a list (LPUSH, for
/// queues that workers LMOVE from).
///
/// Publishing is idempotent per event id within `deduplicationWindow`: a Lua script (atomic on the server)
/// skips an event whose marker key `<key>:published:<event id>` exists, writes it otherwise, and sets the
/// marker. A relay that crashed after publishing but before marking the row done therefore does not
/// duplicate the event when the row is claimed again. The marker is set after the write, in the same script,
/// so a failed write never leaves a marker that would hide the event.
public struct RedisSink: OutboxSink {
    public enum Target: Sendable, Equatable {
        /// XADD with fields `event_id`, `event_type`, `aggregate_id`, `correlation_id`, `data` (the envelope JSON).
        case stream(maximumLength: Int?)
        /// LPUSH of the envelope JSON.
        case list
    }

    public let client: RedisClient
    public let target: Target
    public let deduplicationWindow: Duration
    /// The key an event goes to: by default the outbox row's subject.
    private let key: @Sendable (OutboxRecord) -> String?

    public init(
        client: RedisClient,
        target: Target = .stream(maximumLength: nil),
        deduplicationWindow: Duration = .seconds(24 * 3600),
        key: @escaping @Sendable (OutboxRecord) -> String? = { $0.subject }
    ) throws {
        guard deduplicationWindow >= .milliseconds(1) else {
            throw ProdReadyError(.invalidArgument, "the deduplication window must be at least 1 ms, got \(deduplicationWindow)")
        }
        if case .stream(let maximumLength?) = target, maximumLength < 1 {
            throw ProdReadyError(.invalidArgument, "a stream cap must be at least 1 entry, got \(maximumLength)")
        }
        self.client = client
        self.target = target
        self.deduplicationWindow = deduplicationWindow
        self.key = key
    }

    /// KEYS[1] the stream or list, KEYS[2] the marker; ARGV[1] the window in ms, ARGV[2] the cap (or empty),
    /// ARGV[3…] the value or the stream fields.
    static let streamScript = """
        if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
        if ARGV[2] == '' then
          redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
        else
          redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
        end
        redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
        return 1
        """
    static let listScript = """
        if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
        redis.call('LPUSH', KEYS[1], ARGV[3])
        redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
        return 1
        """

    public func publish(_ records: [OutboxRecord]) async throws -> [Result<Void, ProdReadyError>] {
        let window = Array(String(deduplicationWindow.wholeMilliseconds).utf8)
        return try await publishRows(records) { record -> Result<(eventID: String, command: [[UInt8]]), ProdReadyError> in
            guard let key = key(record), !key.isEmpty else {
                return .failure(ProdReadyError(.invalidArgument, "outbox row \(record.id) (event \(record.eventID)) names no Redis key: set its subject"))
            }
            let marker = Array("\(key):published:\(record.eventID)".utf8)
            var command: [[UInt8]]
            switch target {
            case .stream(let maximumLength):
                command = [Array("EVAL".utf8), Array(Self.streamScript.utf8), Array("2".utf8), Array(key.utf8), marker, window,
                           Array((maximumLength.map(String.init) ?? "").utf8)]
                let fields: [(String, [UInt8])] = [
                    ("event_id", Array(record.eventID.utf8)), ("event_type", Array(record.eventType.utf8)),
                    ("aggregate_id", Array((record.aggregateID ?? "").utf8)), ("correlation_id", Array((record.correlationID ?? "").utf8)),
                    ("data", record.eventData),
                ]
                for (name, value) in fields { command += [Array(name.utf8), value] }
            case .list:
                command = [Array("EVAL".utf8), Array(Self.listScript.utf8), Array("2".utf8), Array(key.utf8), marker, window, [], record.eventData]
            }
            return .success((record.eventID, command))
        } send: { commands in
            let replies = try await client.pipeline(commands.map(\.command))
            return zip(commands, replies).map { command, reply in
                switch reply {
                case .success(.integer(0)), .success(.integer(1)):
                    .success(())
                case .success(let other):
                    .failure(ProdReadyError(.protocolError, "the Redis sink script answered \(other)"))
                case .failure(let error):
                    // A server error (wrong key type, out of memory) may clear up; the relay retries with backoff
                    // and parks the row after its last retry.
                    .failure(ProdReadyError(error.code, "publishing event \(command.eventID) to Redis: \(error.message)", retriable: true))
                }
            }
        }
    }
}
