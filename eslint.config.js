// Lint: the type-checked rules that catch a promise nobody awaits or a promise
// passed where a callback's result is ignored. A deliberate fire-and-forget is
// written `void p` (ignoreVoid), so every one of them is visible in review.
// Formatting is prettier's job (.prettierrc.json), not ESLint's.
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', 'release/', 'node_modules/', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts', 'soak/**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          ignoreVoid: true,
          // node:test's test()/describe() return promises the runner itself awaits.
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite', 'before', 'after'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-for-in-array': 'error',
      '@typescript-eslint/no-unnecessary-type-assertion': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      'no-console': 'off',
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // Prettier wraps code at 120 columns; this catches the comments it leaves
      // long. Strings and test names stay whole, so that they can be grepped.
      'max-len': [
        'error',
        {
          code: 120,
          ignoreStrings: true,
          ignoreTemplateLiterals: true,
          ignoreRegExpLiterals: true,
          ignoreUrls: true,
        },
      ],
      'no-var': 'error',
      // A variable assigned once after a closure that reads it is declared: not a const.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // Only main.ts touches the process (argv, env, signals, exit codes).
    files: ['src/**/*.ts'],
    ignores: ['src/agent/main.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'process', property: 'exit', message: 'only src/agent/main.ts ends the process' },
        { object: 'process', property: 'on', message: 'only src/agent/main.ts handles process events' },
      ],
    },
  },
)
