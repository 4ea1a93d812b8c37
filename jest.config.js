// Jest for the lab extension's models and React components (labextension/test/). The
// components import only React, so no JupyterLab package needs transforming here.
module.exports = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/labextension/test'],
  testRegex: '\\.test\\.tsx?$',
  transform: {
    '^.+\\.tsx?$': [
      'ts-jest',
      { tsconfig: '<rootDir>/labextension/test/tsconfig.json' }
    ]
  }
};
