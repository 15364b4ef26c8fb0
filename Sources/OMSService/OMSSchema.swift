public import ProdReadyPostgres
public import ProdReadyReliability

/// The OMS's Postgres schema: the reliability tables (registry, allocator, outbox) followed by the OMS's own.
/// One version sequence for both, because a schema has one migrations table; a reliability migration added
/// later goes in before the OMS's, renumbering them (none is deployed outside this repository yet).
public enum OMSSchema {
    public static let migrations: [Migration] = ReliabilitySchema.migrations + omsMigrations(startingAt: ReliabilitySchema.migrations.count + 1)

    static func omsMigrations(startingAt first: Int) -> [Migration] {
        [
            Migration(version: first, name: "oms publisher checkpoints") { s in
                """
                CREATE TABLE \(s).oms_publisher_checkpoints (
                    database text PRIMARY KEY,
                    last_sequence bigint NOT NULL CHECK (last_sequence >= 0),
                    tombstones bigint NOT NULL DEFAULT 0,
                    updated_at timestamptz NOT NULL DEFAULT now()
                );
                """
            },
            Migration(version: first + 1, name: "oms write model") { s in
                """
                CREATE TABLE \(s).oms_database_owners (
                    name text PRIMARY KEY,
                    tenant text NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE TABLE \(s).oms_databases (
                    name text PRIMARY KEY,
                    description text NOT NULL,
                    tenant text NOT NULL,
                    seq bigint NOT NULL,
                    deleted boolean NOT NULL DEFAULT false,
                    updated_at timestamptz NOT NULL DEFAULT now()
                );
                CREATE TABLE \(s).oms_classes (
                    database text NOT NULL,
                    class_id text NOT NULL,
                    label text NOT NULL,
                    properties jsonb NOT NULL,
                    seq bigint NOT NULL,
                    PRIMARY KEY (database, class_id)
                );
                CREATE TABLE \(s).oms_instances (
                    database text NOT NULL,
                    class_id text NOT NULL,
                    instance_id text NOT NULL,
                    data jsonb NOT NULL,
                    seq bigint NOT NULL,
                    deleted boolean NOT NULL DEFAULT false,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (database, class_id, instance_id)
                );
                """
            },
            Migration(version: first + 2, name: "oms sequence slots") { s in
                """
                -- Who owns a reserved sequence of a database's event log: the event id of its writer, or
                -- 'tombstone' once the publisher closed it. Rows of published events are deleted with the
                -- checkpoint; tombstone rows stay, so a writer that comes back late is still refused.
                CREATE TABLE \(s).oms_sequence_slots (
                    database text NOT NULL,
                    sequence bigint NOT NULL,
                    owner text NOT NULL,
                    PRIMARY KEY (database, sequence)
                );
                """
            },
        ]
    }

    public static func runner(schema: SQLIdentifier) throws -> MigrationRunner {
        try MigrationRunner(schema: schema, migrations: migrations)
    }
}
