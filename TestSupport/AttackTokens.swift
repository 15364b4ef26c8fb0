import Foundation
import ProdReadyService

/// An unsigned (`alg: none`) admin token an attacker could build by hand.
public func unsignedToken(tenant: String) -> String {
    func encode(_ text: String) -> String {
        Data(text.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    }
    let expires = Int(Date().timeIntervalSince1970) + 3600
    return encode(#"{"alg":"none","typ":"JWT"}"#) + "." + encode(#"{"sub":"mallory","roles":["admin"],"tenant":"\#(tenant)","exp":\#(expires)}"#) + "."
}

/// A well-formed admin token signed with a secret the services do not know.
public func wronglySignedToken(tenant: String) async throws -> String {
    try await TokenAuthority(secret: String(repeating: "wrong-secret-", count: 4)).mint(subject: "mallory", roles: ["admin"], tenant: tenant, ttl: .seconds(600))
}
