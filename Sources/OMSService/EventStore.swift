public import OMSContract
import PostgresNIO
public import ProdReadyCore
import ProdReadyPostgres
public import ProdReadyReliability
public import ProdReadyS3
import Foundation
import Logging

/// The OMS's source of truth: every command and domain event one immutable S3 object, written create-only.
///
/// Keys (SPEC-oms): `events/<database>/<sequence, 20 digits>-<event id>.json`, and
/// `indexes/by-event-id/<event id>.json` pointing at it. The database-wide sequence comes from the allocator
/// (aggregate `<database>` of type `oms_event_log`), so the key order is the commit order.
///
/// A sequence belongs to whoever first inserts its row into `oms_sequence_slots` (Postgres, next to the
/// allocator): the writer that reserved it, or the publisher closing it after the writer took too long. The row
/// names the event id, so the publisher's tombstone goes to the very key the late writer would use and one of
/// the two create-only PUTs loses: a sequence never ends up with both an event and a tombstone. A writer that
/// loses takes a new sequence. (The slot was an S3 object at first; a Postgres row costs a fraction of a PUT,
/// and every command and domain event paid one.)
///
/// Order of writes: slot, event, index. A writer dying before the index leaves an event the retry cannot see;
/// the retry appends it again and consumers, which deduplicate by event id, apply it once. Writing the index
/// first would instead let a writer dying before the event leave an index pointing at nothing: a lost command.
public struct OMSEventStore: Sendable {
    public let s3: S3Client
    public let bucket: String
    public let allocator: SequenceAllocator
    /// How often an append takes a new sequence after losing one to the publisher before it gives up.
    static let sequenceAttempts = 5

    public init(s3: S3Client, bucket: String, allocator: SequenceAllocator) {
        self.s3 = s3
        self.bucket = bucket
        self.allocator = allocator
    }

    public static let allocatorType = "oms_event_log"
    static let logger = Logger(label: "oms.event-store")

    /// What the index stores for an event id.
    public struct IndexEntry: Codable, Sendable, Equatable {
        public var key: String
        public var sequence: Int64
        public var database: String
        public var contentHash: String

        enum CodingKeys: String, CodingKey {
            case key, sequence, database, contentHash = "content_hash"
        }
    }

    public enum AppendOutcome: Sendable, Equatable {
        /// Stored now at this sequence.
        case appended(IndexEntry)
        /// The same event (same id, same content) was stored before: its first result.
        case duplicate(IndexEntry)

        public var entry: IndexEntry {
            switch self {
            case .appended(let entry), .duplicate(let entry): entry
            }
        }
    }

    public static func eventKey(database: String, sequence: Int64, eventID: String) -> String {
        "\(eventPrefix(database: database))\(padded(sequence))-\(eventID).json"
    }
    public static func eventPrefix(database: String) -> String { "events/\(database)/" }
    public static func indexKey(eventID: String) -> String { "indexes/by-event-id/\(eventID).json" }
    static func padded(_ sequence: Int64) -> String {
        let digits = String(sequence)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }
    /// The sequence a key under `events/<database>/` stands for.
    public static func sequence(ofKey key: String) -> Int64? {
        guard let name = key.split(separator: "/").last, name.count > 21 else { return nil }
        return Int64(name.prefix(20))
    }
    /// The marker a closed slot holds instead of an event id.
    static let closedSlot = "tombstone"

    /// Appends `event` (its `sequence` is assigned here): a new id is stored once; the same id with the same
    /// content returns the first result; the same id with other content throws `EventIDReuse`.
    /// - Parameter checkedAbsent: the caller looked the id up an instant ago and found nothing (skips a GET).
    public func append(_ event: OMSEvent, checkedAbsent: Bool = false) async throws -> AppendOutcome {
        if !checkedAbsent, let existing = try await lookup(eventID: event.eventID) {
            return try Self.compare(existing, with: event)
        }
        for _ in 0..<Self.sequenceAttempts {
            let sequence = try await reserve(database: event.database)
            do {
                return try await write(event, at: sequence)
            } catch let error as SequenceClosed {
                _ = error  // the publisher closed it while we were slow: take the next one
                continue
            }
        }
        throw ProdReadyError(.timeout, "appending \(event.eventID) to \(event.database): \(Self.sequenceAttempts) sequences in a row were closed before the write; the store is too slow", retriable: true)
    }

    /// Reserves the next database-wide sequence.
    public func reserve(database: String) async throws -> Int64 {
        try await allocator.reserveNext(database, seed: 0)
    }

    /// Writes `event` at a sequence reserved before: slot, event object, index. Throws `SequenceClosed` when the
    /// publisher closed the sequence first, `EventIDReuse` when another event took the id meanwhile.
    public func write(_ event: OMSEvent, at sequence: Int64) async throws -> AppendOutcome {
        var event = event
        event.sequence = sequence
        let key = Self.eventKey(database: event.database, sequence: sequence, eventID: event.eventID)
        guard try await takeSlot(database: event.database, sequence: sequence, owner: event.eventID) == event.eventID else {
            throw SequenceClosed(database: event.database, sequence: sequence)
        }
        do {
            _ = try await s3.putObject(bucket: bucket, key: key, body: event.encoded(), condition: .ifAbsent, contentType: "application/json")
        } catch let error as ProdReadyError where error.code == .preconditionFailed {
            throw SequenceClosed(database: event.database, sequence: sequence)
        } catch {
            // Certainly not stored (S3 refused the connection or answered an error): hand the slot to the publisher
            // so it closes the sequence at once instead of after its gap timeout. An S3 outage refuses every append
            // after its reservation, and each of those gaps otherwise held up everything behind it once S3 was back.
            if !Self.mayHaveStored(error) { await abandon(database: event.database, sequence: sequence, owner: event.eventID) }
            throw error
        }
        let entry = IndexEntry(key: key, sequence: sequence, database: event.database, contentHash: event.contentHash)
        do {
            _ = try await s3.putObject(bucket: bucket, key: Self.indexKey(eventID: event.eventID), body: Self.encode(entry), condition: .ifAbsent, contentType: "application/json")
            return .appended(entry)
        } catch let error as ProdReadyError where error.code == .preconditionFailed {
            // A concurrent append of the same id won the index. Our object stays in the log as a copy that
            // consumers deduplicate by id; the caller gets the first result, or the reuse error.
            guard let existing = try await lookup(eventID: event.eventID) else { throw error }
            return try Self.compare(existing, with: event)
        } catch {
            // The event is in the log already: the publisher will publish it whatever happens to its index entry
            // (found by a soak: S3 stopped between the two PUTs, the create was refused and applied all the same).
            throw StoredWithoutIndex(key: key, eventID: event.eventID, cause: error)
        }
    }

    /// The index entry of an event id, if one was stored.
    public func lookup(eventID: String) async throws -> IndexEntry? {
        do {
            let object = try await s3.getObject(bucket: bucket, key: Self.indexKey(eventID: eventID))
            return try JSONDecoder().decode(IndexEntry.self, from: Data(object.body))
        } catch let error as ProdReadyError where error.code == .notFound {
            return nil
        }
    }

    public func read(key: String) async throws -> OMSEvent {
        try OMSEvent.decode(try await s3.getObject(bucket: bucket, key: key).body)
    }

    /// Event keys of `database` after `sequence`, in order (one listing page of up to `limit`).
    public func keys(database: String, after sequence: Int64, limit: Int = 1_000) async throws -> [String] {
        // '.' sorts right after '-', so this skips every key of `sequence` itself and keeps the next ones.
        let page = try await s3.listObjects(bucket: bucket, prefix: Self.eventPrefix(database: database), startAfter: Self.eventPrefix(database: database) + Self.padded(sequence) + ".", maxKeys: limit)
        return page.keys
    }

    public enum CloseOutcome: Sendable, Equatable {
        /// The sequence now holds a tombstone at this key.
        case tombstoned(key: String)
        /// Its writer got there first: the event is (or is about to be) at this key.
        case written(key: String)
    }

    /// Closes a sequence its writer has not written: takes its slot (or, if the writer holds the slot, its event
    /// key) with a tombstone. Safe to repeat after a crash halfway.
    public func close(database: String, sequence: Int64, reason: String) async throws -> CloseOutcome {
        let owner = try await takeSlot(database: database, sequence: sequence, owner: Self.closedSlot)
        let key = Self.eventKey(database: database, sequence: sequence, eventID: owner)
        let tombstone = OMSEvent(
            eventID: owner == Self.closedSlot ? "tombstone-\(database)-\(sequence)" : owner, kind: .tombstone, eventType: "TOMBSTONE",
            database: database, sequence: sequence, aggregateID: database, aggregateSequence: 0, commandID: "", actor: "oms-publisher", tenant: "",
            payload: ["reason": .string(reason)])
        do {
            _ = try await s3.putObject(bucket: bucket, key: key, body: tombstone.encoded(), condition: .ifAbsent, contentType: "application/json")
            return .tombstoned(key: key)
        } catch let error as ProdReadyError where error.code == .preconditionFailed {
            let stored = try await read(key: key)
            return stored.kind == .tombstone ? .tombstoned(key: key) : .written(key: key)
        }
    }

    /// Whether a failed S3 write may have stored its object all the same: a timeout or a dropped connection may
    /// have; a refused connection or an error answer has not.
    public static func mayHaveStored(_ error: any Error) -> Bool {
        guard let error = error as? ProdReadyError else { return false }
        switch error.code {
        case .timeout: return true
        case .connectionFailed: return !"\(error)".localizedCaseInsensitiveContains("connection refused")
        default: return false
        }
    }

    /// Gives up a slot its owner will never write: it becomes a closed slot, which the publisher tombstones as soon
    /// as it reaches the sequence. Best effort: if this fails, the publisher closes the gap after its timeout.
    func abandon(database: String, sequence: Int64, owner: String) async {
        let query: PostgresQuery = """
            UPDATE \(unescaped: allocator.schema.quoted).oms_sequence_slots SET owner = \(Self.closedSlot)
            WHERE database = \(database) AND sequence = \(sequence) AND owner = \(owner)
            """
        do {
            _ = try await queryRows(allocator.client, query, deadline: allocator.operationTimeout ?? .seconds(10), doing: "abandoning sequence \(sequence) of \(database)", logger: Self.logger)
        } catch {
            Self.logger.warning("sequence not handed to the publisher; it closes it after its gap timeout", metadata: ["database": "\(database)", "sequence": "\(sequence)", "error": "\(error)"])
        }
    }

    /// The sequences from `first` on, in a run without holes, whose slots are closed (abandoned by their writer,
    /// or taken by a publisher that stopped before its tombstone): each can be tombstoned now.
    public func closedRun(database: String, from first: Int64, through last: Int64) async throws -> [Int64] {
        let query: PostgresQuery = """
            SELECT sequence FROM \(unescaped: allocator.schema.quoted).oms_sequence_slots
            WHERE database = \(database) AND sequence BETWEEN \(first) AND \(last) AND owner = \(Self.closedSlot) ORDER BY sequence
            """
        let rows = try await queryRows(allocator.client, query, deadline: allocator.operationTimeout ?? .seconds(10), doing: "reading closed slots of \(database)", logger: Self.logger)
        var run: [Int64] = []
        for row in rows {
            let sequence = try row.decode(Int64.self)
            guard sequence == first + Int64(run.count) else { break }
            run.append(sequence)
        }
        return run
    }

    /// Takes sequence `sequence` of `database` for `owner` unless someone holds it; returns who holds it now.
    public func takeSlot(database: String, sequence: Int64, owner: String) async throws -> String {
        let table = "\(allocator.schema.quoted).oms_sequence_slots"
        // Under READ COMMITTED a conflicting row committed after this statement's snapshot is not visible to
        // its SELECT: then nothing comes back and the next try sees it.
        for _ in 0..<3 {
            let query: PostgresQuery = """
                WITH taken AS (
                    INSERT INTO \(unescaped: table) (database, sequence, owner) VALUES (\(database), \(sequence), \(owner))
                    ON CONFLICT (database, sequence) DO NOTHING RETURNING owner)
                SELECT owner FROM taken UNION ALL SELECT owner FROM \(unescaped: table) WHERE database = \(database) AND sequence = \(sequence) LIMIT 1
                """
            let rows = try await queryRows(allocator.client, query, deadline: allocator.operationTimeout ?? .seconds(10), doing: "taking sequence \(sequence) of \(database)", logger: Self.logger)
            if let holder = try rows.first?.decode(String.self) { return holder }
        }
        throw ProdReadyError(.protocolError, "sequence \(sequence) of \(database) has no owner after three tries to take it")
    }

    static func compare(_ existing: IndexEntry, with event: OMSEvent) throws -> AppendOutcome {
        guard existing.contentHash == event.contentHash else {
            throw EventIDReuse(eventID: event.eventID, storedKey: existing.key)
        }
        return .duplicate(existing)
    }

    static func encode(_ entry: IndexEntry) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? Array(encoder.encode(entry))) ?? []
    }
}

/// An event id came back with other content than the first time (SPEC-oms: 409 `event_id_reuse`).
public struct EventIDReuse: Error, Sendable, Equatable, CustomStringConvertible {
    public var eventID: String
    public var storedKey: String
    public var description: String { "event id \(eventID) was already used for other content (stored at \(storedKey))" }
}

/// The publisher closed this sequence before its writer wrote it; the writer takes another.
/// The event object was written to the log, its index entry was not: the event exists (and will be published), so
/// whoever appended it must not report the append as refused.
public struct StoredWithoutIndex: Error, Sendable, CustomStringConvertible {
    public var key: String
    public var eventID: String
    public var cause: any Error
    public init(key: String, eventID: String, cause: any Error) {
        self.key = key
        self.eventID = eventID
        self.cause = cause
    }
    public var description: String { "event \(eventID) is stored at \(key) but its index entry is not: \(cause)" }
}

public struct SequenceClosed: Error, Sendable, Equatable, CustomStringConvertible {
    public var database: String
    public var sequence: Int64
    public init(database: String, sequence: Int64) {
        self.database = database
        self.sequence = sequence
    }
    public var description: String { "sequence \(sequence) of \(database) was closed before it was written" }
}
