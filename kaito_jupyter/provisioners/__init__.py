"""Node provisioners: where a workspace's GPU nodes come from (`aks`, `nodeclaim`, `byo`,
`local`). Cloud SDKs are imported inside the functions that use them, never at package
import, so `import kaito_jupyter` stays light."""
