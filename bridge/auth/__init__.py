"""Sign-in with the Microsoft identity platform: `tokens` (the Token, MSAL's errors, the
app-only provider), `delegated` (device-code sign-in's token cache and provider),
`providers` (which provider an account gets), `certificates` (client certificates and their
thumbprints), `hints` (what an AADSTS error means). May import: `bridge.config`,
`bridge.errors`, `bridge.log`, `bridge.util`.
"""
