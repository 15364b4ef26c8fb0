public import JWTKit
public import Foundation

/// What a bearer token says about its holder (SPEC-services: `sub`, `roles`, `tenant`, `exp`).
public struct ServiceClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var roles: [String]
    public var tenant: String
    public var exp: ExpirationClaim

    public init(subject: String, roles: [String], tenant: String, expires: Date) {
        self.sub = SubjectClaim(value: subject)
        self.roles = roles
        self.tenant = tenant
        self.exp = ExpirationClaim(value: expires)
    }

    public func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
    }
}

/// Who made a request, once their token was verified.
public struct ServiceIdentity: Sendable, Equatable {
    public var subject: String
    public var roles: Set<String>
    public var tenant: String

    public init(subject: String, roles: Set<String>, tenant: String) {
        self.subject = subject
        self.roles = roles
        self.tenant = tenant
    }

    /// `admin` holds every role.
    public func has(_ role: ServiceRole) -> Bool { roles.contains(role.rawValue) || roles.contains(ServiceRole.admin.rawValue) }
}

/// The roles routes ask for. `admin` stands for all of them.
public struct ServiceRole: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let reader = ServiceRole("reader")
    public static let writer = ServiceRole("writer")
    public static let admin = ServiceRole("admin")
}

/// Signs and verifies the services' bearer tokens: HS256 with a shared secret (`PRODREADY_JWT_SECRET`).
public struct TokenAuthority: Sendable {
    /// Shorter secrets are refused at start-up: HS256 with a guessable key is no authentication.
    public static let minimumSecretLength = 32
    private let keys: JWTKeyCollection

    public init(secret: String) async throws {
        guard secret.utf8.count >= Self.minimumSecretLength else {
            throw ServiceConfigurationError(setting: "PRODREADY_JWT_SECRET", value: nil, expected: "at least \(Self.minimumSecretLength) bytes, got \(secret.utf8.count)")
        }
        keys = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
    }

    /// A signed token for `subject` with `roles` in `tenant`, valid for `ttl`.
    public func mint(subject: String, roles: [String], tenant: String, ttl: Duration) async throws -> String {
        let seconds = Double(ttl.components.seconds) + Double(ttl.components.attoseconds) / 1e18
        return try await keys.sign(ServiceClaims(subject: subject, roles: roles, tenant: tenant, expires: Date(timeIntervalSinceNow: seconds)))
    }

    /// Verifies an `Authorization` header value; every way a token can be wrong is a 401 naming which.
    public func identity(authorization: String?) async throws(ServiceError) -> ServiceIdentity {
        guard let authorization, !authorization.isEmpty else {
            throw Self.unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            throw Self.unauthorized("the Authorization header must be 'Bearer <token>'")
        }
        let token = String(parts[1]).trimmingCharacters(in: .whitespaces)
        // The header is checked before jwt-kit sees the token, so `alg: none` or a switch to another
        // algorithm is refused by name whatever keys the collection holds.
        guard let algorithm = Self.headerAlgorithm(token) else { throw Self.unauthorized("the token is malformed") }
        guard algorithm == "HS256" else { throw Self.unauthorized("the token's algorithm '\(algorithm)' is not accepted (HS256 only)") }
        let claims: ServiceClaims
        do {
            claims = try await keys.verify(token, as: ServiceClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw Self.unauthorized("the token has expired")
        } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
            throw Self.unauthorized("the token's signature does not verify")
        } catch {
            throw Self.unauthorized("the token is malformed or lacks sub, roles, tenant or exp")
        }
        guard !claims.sub.value.isEmpty, !claims.tenant.isEmpty else { throw Self.unauthorized("the token's sub and tenant must not be empty") }
        return ServiceIdentity(subject: claims.sub.value, roles: Set(claims.roles), tenant: claims.tenant)
    }

    static func unauthorized(_ message: String) -> ServiceError {
        ServiceError(.unauthorized, "unauthorized", message, headers: [.wwwAuthenticate: "Bearer"])
    }

    /// The `alg` of a compact JWS header, or nil when the token is not three base64url parts with a JSON header.
    static func headerAlgorithm(_ token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var base64 = parts[0].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        guard let data = Data(base64Encoded: base64),
            let header = try? JSONDecoder().decode([String: JSONValue].self, from: data)
        else { return nil }
        return header["alg"]?.stringValue
    }
}
