"""Sign-in with the Microsoft identity platform: token providers through MSAL, the
delegated token cache, and what an AADSTS error means. May import: `bridge.config`,
`bridge.errors`, `bridge.log`, `bridge.util`.
"""
