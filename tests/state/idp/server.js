// A real OpenID provider (panva's node-oidc-provider, OpenID Certified) for the
// state tests: discovery, JWKS, and JWT access tokens from the client_credentials
// grant. The test asks for a token "as" a user with `test_user` and `test_groups`
// (extraParams): the provider signs them into the token as preferred_username and
// groups, as a company IdP would after a sign-in.
//
//   node server.js PORT AUDIENCE   -> prints "ready <issuer>" once listening
import Provider from 'oidc-provider';

const port = Number(process.argv[2] || 9400);
const audience = process.argv[3] || 'carafe';
const ttl = Number(process.argv[4] || 300);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'carafe-tests',
    client_secret: 'carafe-tests-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
  }],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'openid',
        audience: resource,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
      }),
    },
  },
  extraTokenClaims: (ctx) => {
    const p = ctx.oidc.body || {};
    const claims = {};
    if (p.test_user) claims.preferred_username = p.test_user;
    if (p.test_groups !== undefined) claims.groups = p.test_groups ? p.test_groups.split(',') : [];
    if (p.test_roles) claims.roles = p.test_roles.split(',');
    return claims;
  },
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
