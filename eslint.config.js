// Type-aware lint for the whole monorepo. The pure libraries (tdx-sim, vmm, experiments) get extra
// rules: no framework, Redis, queue or metrics imports, no I/O, and no hidden clock or randomness.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import tseslint from 'typescript-eslint';

const pureLibraries = ['libs/tdx-sim/**/*.ts', 'libs/vmm/**/*.ts', 'libs/experiments/**/*.ts'];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.data/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: { ...globals.node },
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['**/*.spec.ts', 'test/**/*.ts'],
    rules: {
      // node:test's describe/it return promises that the runner awaits itself.
      '@typescript-eslint/no-floating-promises': 'off',
    },
  },
  {
    files: pureLibraries,
    ignores: ['**/*.spec.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '@nestjs/*',
                'ioredis',
                'bullmq',
                'prom-client',
                'pino',
                'node:*',
                'fs',
                'net',
                'http',
                'child_process',
              ],
              message:
                'libs/tdx-sim, libs/vmm and libs/experiments are pure: no framework, Redis, queue, metrics or I/O imports.',
            },
          ],
        },
      ],
      'no-restricted-globals': [
        'error',
        {
          name: 'setTimeout',
          message: 'Time enters the pure libraries through an injected clock.',
        },
        {
          name: 'setInterval',
          message: 'Time enters the pure libraries through an injected clock.',
        },
        { name: 'process', message: 'The pure libraries read no environment.' },
      ],
      'no-restricted-properties': [
        'error',
        { object: 'Date', property: 'now', message: 'Use the injected clock.' },
        { object: 'Math', property: 'random', message: 'Pass a seeded random source.' },
      ],
    },
  },
  prettier,
);
