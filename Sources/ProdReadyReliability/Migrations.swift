public import PostgresNIO
public import ProdReadyCore
public import ProdReadyPostgres
import Logging
import Foundation

/// One step of a schema's history. `sql` receives the quoted schema name and must be idempotent
/// (`IF NOT EXISTS`, `CREATE OR REPLACE`) so that a half-applied database can be migrated again.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: @Sendable (_ schema: String) -> String

    public init(version: Int, name: String, sql: @escaping @Sendable (_ schema: String) -> String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// What a migration run did.
public struct MigrationReport: Sendable, Equatable {
    /// The versions this run applied, in order (empty when the schema was already current).
    public var applied: [Int]
    /// The schema's version after the run.
    public var currentVersion: Int

    public init(applied: [Int], currentVersion: Int) {
        self.applied = applied
        self.currentVersion = currentVersion
    }
}

/// Applies versioned migrations to one schema, recording them in `<schema>.prodready_schema_migrations`.
///
/// Safe to call from every service at start-up: runs hold a transaction-scoped advisory lock on the schema,
/// so concurrent starts apply each migration once. A database already at a version newer than the code
/// knows is refused with `incompatible_schema` — old code must not write to tables whose meaning changed.
public struct MigrationRunner: Sendable {
    public let schema: SQLIdentifier
    public let migrations: [Migration]

    public init(schema: SQLIdentifier, migrations: [Migration]) throws {
        let versions = migrations.map(\.version)
        guard !versions.isEmpty, versions == Array(1...versions.count) else {
            throw ProdReadyError(.invalidArgument, "migration versions must be 1, 2, 3… in order; got \(versions)")
        }
        self.schema = schema
        self.migrations = migrations
    }

    public var latestVersion: Int { migrations.last?.version ?? 0 }

    @discardableResult
    public func run(on client: PostgresClient, logger: Logger = reliabilityLogger) async throws -> MigrationReport {
        let schema = self.schema
        let migrations = self.migrations
        let latest = latestVersion
        do {
            return try await withPostgresTransaction(client, logger: logger, doing: "migrating schema '\(schema.name)'") { connection in
                // Different schemas migrate in parallel; one schema's runs queue here.
                try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\("prodready_migrations:" + schema.name)))", logger: logger)
                try await connection.query(PostgresQuery(unsafeSQL: """
                    CREATE SCHEMA IF NOT EXISTS \(schema.quoted);
                    """), logger: logger)
                try await connection.query(PostgresQuery(unsafeSQL: """
                    CREATE TABLE IF NOT EXISTS \(schema.quoted).prodready_schema_migrations (
                        version int PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """), logger: logger)
                var current = 0
                for try await version in try await connection.query(
                    PostgresQuery(unsafeSQL: "SELECT coalesce(max(version), 0) FROM \(schema.quoted).prodready_schema_migrations"), logger: logger
                ).decode(Int.self) {
                    current = version
                }
                guard current <= latest else {
                    throw ProdReadyError(
                        .incompatibleSchema,
                        "schema '\(schema.name)' is at version \(current), newer than this code knows (\(latest)); upgrade the service instead of running old code against it"
                    )
                }
                var applied: [Int] = []
                for migration in migrations where migration.version > current {
                    // The extended protocol PostgresNIO speaks takes one statement per query.
                    for statement in SQLScript.statements(migration.sql(schema.quoted)) {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                    try await connection.query(
                        PostgresQuery(unsafeSQL: "INSERT INTO \(schema.quoted).prodready_schema_migrations (version, name) VALUES (\(migration.version), '\(migration.name)')"),
                        logger: logger
                    )
                    applied.append(migration.version)
                }
                return MigrationReport(applied: applied, currentVersion: max(current, applied.last ?? current))
            }
        } catch {
            throw ProdReadyError.postgres(error, doing: "migrating schema '\(schema.name)'")
        }
    }
}

/// Splits a script into statements at semicolons outside quotes, dollar-quoted bodies and `--` comments.
public enum SQLScript {
    public static func statements(_ script: String) -> [String] {
        var statements: [String] = []
        var current: [UInt8] = []
        let bytes = Array(script.utf8)
        var index = 0
        var inSingleQuote = false
        var inDollarQuote = false
        var inComment = false
        while index < bytes.count {
            let byte = bytes[index]
            let next = index + 1 < bytes.count ? bytes[index + 1] : 0
            if inComment {
                if byte == UInt8(ascii: "\n") { inComment = false }
            } else if inSingleQuote {
                if byte == UInt8(ascii: "'") { inSingleQuote = false }
            } else if inDollarQuote {
                if byte == UInt8(ascii: "$"), next == UInt8(ascii: "$") {
                    inDollarQuote = false
                    current.append(byte)
                    index += 1
                }
            } else if byte == UInt8(ascii: "-"), next == UInt8(ascii: "-") {
                inComment = true
            } else if byte == UInt8(ascii: "'") {
                inSingleQuote = true
            } else if byte == UInt8(ascii: "$"), next == UInt8(ascii: "$") {
                inDollarQuote = true
                current.append(byte)
                index += 1
            } else if byte == UInt8(ascii: ";") {
                append(&statements, current)
                current = []
                index += 1
                continue
            }
            current.append(byte)
            index += 1
        }
        append(&statements, current)
        return statements
    }

    private static func append(_ statements: inout [String], _ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let meaningful = text.split(separator: "\n").contains { line in
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            return !trimmed.isEmpty && !trimmed.hasPrefix("--")
        }
        if meaningful { statements.append(text.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}

extension ProdReadyError.Code {
    /// The database's schema is newer than the code, or otherwise not one the code can use.
    public static let incompatibleSchema = ProdReadyError.Code("incompatible_schema")
    /// A conditional write lost: the aggregate moved on since the caller read it.
    public static let optimisticConcurrencyConflict = ProdReadyError.Code("optimistic_concurrency_conflict")
    /// The caller does not own the record it tried to change (another worker claimed it).
    public static let notOwner = ProdReadyError.Code("not_owner")
    /// A circuit breaker is open: the call was refused without touching the dependency.
    public static let circuitOpen = ProdReadyError.Code("circuit_open")
    /// A long handler's lease could not be renewed: another worker may now own the event.
    public static let leaseLost = ProdReadyError.Code("lease_lost")
}

/// The logger the reliability types use when the caller passes none: silent.
public let reliabilityLogger = Logger(label: "prodready.reliability", factory: { _ in SwiftLogNoOpLogHandler() })
